package credential

import (
	"context"
	"fmt"
	"strings"
	"unique"

	"github.com/tokenbroker/tokenbroker/config"
)

// FromConfig builds the Source a credential's `type` asks for. logf, when not
// nil, receives notes about adjustments to IdP answers (never a token or secret).
func FromConfig(c *config.Credential, logf func(credential, format string, args ...any)) (Source, error) {
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
	f := formatted{src: src, affixes: unique.Make(affixes{prefix, suffix})}
	if ch, ok := src.(changer); ok {
		return formattedChanger{f, ch}
	}
	return f
}

func fromConfig(c *config.Credential, logf func(credential, format string, args ...any)) (Source, error) {
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

// formatted is a Source under WithFormat. It is one per credential: the
// format's halves, the same for most, are shared (24 bytes instead of 48).
type formatted struct {
	src     Source
	affixes unique.Handle[affixes]
}

// affixes are a format split around {token}.
type affixes struct{ prefix, suffix string }

func (f formatted) Token(ctx context.Context) (Token, error) {
	t, err := f.src.Token(ctx)
	if err != nil {
		return t, err
	}
	a := f.affixes.Value()
	t.Header = a.prefix + t.Value + a.suffix
	t.Value = t.Header[len(a.prefix) : len(t.Header)-len(a.suffix)]
	return t, nil
}

// changer is a source whose value can change under it (a static value file).
type changer interface{ Changed() bool }

type formattedChanger struct {
	formatted
	ch changer
}

func (f formattedChanger) Changed() bool { return f.ch.Changed() }
