package filter

import (
	"context"

	"github.com/tokenbroker/tokenbroker/cache"
)

// PushCredential is one credential as push mode (package sds) serves it:
// who may subscribe to it, and its header value formatted exactly as Decide
// injects it, so a proxy that injects the pushed value sets the same bytes
// a Check answer would.
type PushCredential struct {
	tokens *cache.Tokens
	b      *binding
}

// PushCredential returns the credential called name in this configuration.
func (f *Filter) PushCredential(name string) (PushCredential, bool) {
	b, ok := f.bindings[name]
	if !ok {
		return PushCredential{}, false
	}
	return PushCredential{tokens: f.tokens, b: b}, true
}

// Allows reports whether a caller with this verified principal and address
// may have the credential: its allowed_sources, as for a Check.
func (p PushCredential) Allows(principal, address string) bool {
	return p.b.sources.allows(principal, address)
}

// Value returns the header value of a usable token and the token's lease,
// obtaining the token as a cold Check does. With fresh, a token due for
// refresh is replaced first (cache.Tokens.Lease).
func (p PushCredential) Value(ctx context.Context, fresh bool) (string, cache.Lease, error) {
	if p.b.changer != nil && p.b.changer.Changed() {
		p.tokens.Invalidate(p.b.key)
	}
	l, err := p.tokens.Lease(ctx, p.b.key, p.b.src, fresh)
	if err != nil {
		return "", cache.Lease{}, err
	}
	return p.b.value(l.Token), l, nil
}

// Polled reports whether the value can change in place with no expiry to
// say so (a static value file): push mode then asks Value again now and then.
func (p PushCredential) Polled() bool { return p.b.changer != nil }

// SameValue reports whether q yields the same header values as p: the same
// cached token (identity) in the same format. A reload that changes either
// needs a new value pushed.
func (p PushCredential) SameValue(q PushCredential) bool {
	return p.b.key == q.b.key && p.b.prefix == q.b.prefix && p.b.suffix == q.b.suffix
}
