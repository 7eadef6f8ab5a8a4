package filter

import (
	"context"
	"net/netip"
	"slices"
	"strings"

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
	return p.b.value(&l.Token), l, nil
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

// AllowsAny reports whether a caller with this verified principal and
// address may have at least one credential of this configuration. Push mode
// asks it when a stream opens, so a caller that may have nothing cannot
// hold a stream at all. It costs a few map lookups however many
// credentials there are: the union of every allowed_sources is built once
// per configuration, on first use.
func (f *Filter) AllowsAny(principal, address string) bool {
	u := f.anySource.Load()
	if u == nil {
		u = newSourceUnion(f.bindings)
		f.anySource.Store(u) // two first callers build the same union
	}
	return u.allows(principal, address)
}

// sourceUnion is the union of the credentials' source policies.
type sourceUnion struct {
	everyone bool                // a credential without allowed_sources
	exact    map[string]struct{} // principals without "*"
	patterns []string            // principals with "*", distinct
	prefixes map[netip.Prefix]struct{}
	bits     []int // the distinct lengths in prefixes: one lookup each
}

func newSourceUnion(bindings map[string]*binding) *sourceUnion {
	u := &sourceUnion{exact: map[string]struct{}{}, prefixes: map[netip.Prefix]struct{}{}}
	for _, b := range bindings {
		p := b.sources
		if p == nil {
			return &sourceUnion{everyone: true}
		}
		for _, pat := range p.principals {
			if !strings.Contains(pat, "*") {
				u.exact[pat] = struct{}{}
			} else if !slices.Contains(u.patterns, pat) {
				u.patterns = append(u.patterns, pat)
			}
		}
		for _, pfx := range p.prefixes {
			if _, ok := u.prefixes[pfx]; !ok {
				u.prefixes[pfx] = struct{}{}
				if !slices.Contains(u.bits, pfx.Bits()) {
					u.bits = append(u.bits, pfx.Bits())
				}
			}
		}
	}
	return u
}

func (u *sourceUnion) allows(principal, address string) bool {
	if u.everyone {
		return true
	}
	if principal != "" {
		if _, ok := u.exact[principal]; ok {
			return true
		}
		for _, pat := range u.patterns {
			if matchPrincipal(pat, principal) {
				return true
			}
		}
	}
	if len(u.bits) == 0 || address == "" {
		return false
	}
	a, err := netip.ParseAddr(address)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, n := range u.bits {
		if pfx, err := a.Prefix(n); err == nil { // err: a length of the other family
			if _, ok := u.prefixes[pfx]; ok {
				return true
			}
		}
	}
	return false
}
