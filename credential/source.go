package credential

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unique"

	"github.com/tokenbroker/tokenbroker/config"
)

// Hooks are the functions every source built from one configuration
// shares. A client-credentials source built by Hooks.FromConfig keeps one
// pointer to them inside its endpoint, which the IdP's clients share, so
// they cost nothing per credential. Do not change them once a source is
// built.
type Hooks struct {
	// Now stamps tokens; nil means time.Now.
	Now func() time.Time
	// Logf, when not nil, receives notes about adjustments to IdP answers
	// (never a token or secret), with the credential's name.
	Logf func(credential, format string, args ...any)
}

func (h *Hooks) now() func() time.Time {
	if h == nil || h.Now == nil {
		return time.Now
	}
	return h.Now
}

func (h *Hooks) logf() func(credential, format string, args ...any) {
	if h == nil {
		return nil
	}
	return h.Logf
}

// FromConfig builds the Source a credential's `type` asks for. logf, when not
// nil, receives notes about adjustments to IdP answers (never a token or secret).
// A client-credentials source with logf set is a *ClientCredentials with Logf
// set; to build many sources that share their functions at no cost per
// credential, use Hooks.FromConfig.
func FromConfig(c *config.Credential, logf func(credential, format string, args ...any)) (Source, error) {
	src, err := (*Hooks)(nil).FromConfig(c)
	if cl, ok := src.(*client); ok && logf != nil {
		return &ClientCredentials{Logf: logf, client: *cl}, nil
	}
	return src, err
}

// FromConfig builds the Source a credential's `type` asks for, its header
// filled from c.Format at mint time (as WithFormat does), using h's
// functions (h may be nil: none). A client-credentials source costs no
// wrapper and no copy of h: the format and h are kept in the endpoint it
// shares with the other clients of its IdP.
func (h *Hooks) FromConfig(c *config.Credential) (Source, error) {
	switch c.Type {
	case "", "client_credentials", "token_exchange", "jwt_bearer":
		ep := formatEndpoint(c.Format)
		ep.hooks = h
		cl, err := newClient(c, nil, ep)
		if err != nil {
			return nil, err
		}
		return &cl, nil
	case "static":
		s, err := NewStatic(c)
		if err != nil {
			return nil, err
		}
		if h != nil {
			s.Now = h.Now
		}
		return WithFormat(s, c.Format), nil
	default:
		return nil, fmt.Errorf("credential %q: unsupported type %q", c.Name, c.Type)
	}
}

// formatEndpoint is an endpoint holding only format's affixes (none when
// format has no {token}).
func formatEndpoint(format string) endpoint {
	prefix, suffix, ok := strings.Cut(format, "{token}")
	if !ok {
		return endpoint{}
	}
	return endpoint{format: affixes{prefix, suffix}, formats: true}
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

// formatted is a Source under WithFormat. It is one per credential: the
// format's halves, the same for most, are shared (24 bytes instead of 48).
// Client-credentials sources from FromConfig format themselves instead.
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
	t.format(f.affixes.Value())
	return t, nil
}

// format sets t.Header to a's prefix, the token and a's suffix, and makes
// t.Value the token's part of it.
func (t *Token) format(a affixes) {
	t.Header = a.prefix + t.Value + a.suffix
	t.Value = t.Header[len(a.prefix) : len(t.Header)-len(a.suffix)]
}

// changer is a source whose value can change under it (a static value file).
type changer interface{ Changed() bool }

type formattedChanger struct {
	formatted
	ch changer
}

func (f formattedChanger) Changed() bool { return f.ch.Changed() }
