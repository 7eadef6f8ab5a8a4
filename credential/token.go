// Package credential obtains tokens from identity providers.
//
// A Source knows one IdP and one client; it returns a token and its expiry and
// nothing more: caching, retries and refresh belong to package cache.
package credential

import (
	"context"
	"time"
)

// Token is an access token and the instant it stops being valid.
type Token struct {
	Value  string    // the access token; never log it
	Type   string    // token_type as sent by the IdP, e.g. "Bearer"
	Expiry time.Time // absolute expiry: Issued + expires_in
	Issued time.Time // when it was requested, so that Expiry errs early rather than late
	Scope  string    // scope granted, when the IdP says

	// Binding is opaque data a caller stores with the token and gets back on
	// every hit (the token broker keeps a keyed hash of the secret that minted
	// it here). It travels with the token through every cache tier.
	Binding string

	// Header is Value written into the credential's header format (e.g.
	// "Bearer {token}") when the source knows the format; Value is then a
	// slice of it, so a cached token costs one copy, not two. Empty when
	// unknown (a token read back from the shared tier, a broker token).
	Header string
}

// Lifetime is how long the token was valid for when it was issued.
func (t Token) Lifetime() time.Duration { return t.Expiry.Sub(t.Issued) }

// Source mints a new token each time Token is called. It must be safe for concurrent use.
type Source interface {
	Token(ctx context.Context) (Token, error)
}
