package credential

import (
	"context"
	"fmt"
	"strings"

	"github.com/tokenbroker/tokenbroker/config"
)

// FromConfig builds the Source a credential's `type` asks for. logf, when not
// nil, receives notes about adjustments to IdP answers (never a token or secret).
func FromConfig(c *config.Credential, logf func(format string, args ...any)) (Source, error) {
	src, err := fromConfig(c, logf)
	if err != nil {
		return nil, err
	}
	return WithFormat(src, c.Format), nil
}

// WithFormat makes src fill Token.Header from format ("Bearer {token}") at
// mint time, so the header value is built once per token and the token's
// bytes are stored once (Value becomes a slice of Header). A format without
// {token} leaves src as it is.
func WithFormat(src Source, format string) Source {
	prefix, suffix, ok := strings.Cut(format, "{token}")
	if !ok {
		return src
	}
	f := formatted{src: src, prefix: prefix, suffix: suffix}
	if ch, ok := src.(changer); ok {
		return formattedChanger{f, ch}
	}
	return f
}

func fromConfig(c *config.Credential, logf func(format string, args ...any)) (Source, error) {
	switch c.Type {
	case "", "client_credentials", "token_exchange", "jwt_bearer":
		cc, err := NewClientCredentials(c, nil)
		if err != nil {
			return nil, err
		}
		cc.Logf = logf
		return cc, nil
	case "static":
		return NewStatic(c)
	default:
		return nil, fmt.Errorf("credential %q: unsupported type %q", c.Name, c.Type)
	}
}

// formatted is a Source under WithFormat.
type formatted struct {
	src            Source
	prefix, suffix string
}

func (f formatted) Token(ctx context.Context) (Token, error) {
	t, err := f.src.Token(ctx)
	if err != nil {
		return t, err
	}
	t.Header = f.prefix + t.Value + f.suffix
	t.Value = t.Header[len(f.prefix) : len(t.Header)-len(f.suffix)]
	return t, nil
}

// changer is a source whose value can change under it (a static value file).
type changer interface{ Changed() bool }

type formattedChanger struct {
	formatted
	ch changer
}

func (f formattedChanger) Changed() bool { return f.ch.Changed() }
