package config

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"maps"
	"slices"
)

// valueKey keys the HMAC through which an inline static value enters a
// credential's identity. The identity becomes a cache key and a Redis key
// name, so an unkeyed hash of a short API key could be confirmed or guessed
// offline by anyone who reads those. The key is random per process and kept
// across reloads, so an unchanged value keeps its cached token and a changed
// one gets a new identity. Static tokens never go to the fleet's shared tier
// (they cost nothing to mint), so replicas need not agree on it.
var valueKey = func() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k) // never fails since Go 1.24: it crashes the program instead
	return k
}()

// Identity returns a hex SHA-256 over the fields that decide which token the
// credential yields: type, token_url, client_id, auth_method, scopes,
// audience and params, and for the further grants and static values the
// files they read and, for an inline static value, an HMAC of the value.
// Scopes and params are sorted so their order does not matter; the
// client secret, header, format and timeouts are left out, so rotating a
// secret or moving the token to another header keeps cached tokens. It is
// the token cache key: compute it once per credential, not per request.
func (c *Credential) Identity() string {
	h := sha256.New()
	// Every string is length-prefixed and every list count-prefixed, so no
	// two different credentials encode to the same bytes.
	put(h, "tokenbroker.credential.v1")
	put(h, c.Type, c.TokenURL, c.ClientID, c.AuthMethod)
	putLen(h, len(c.Scopes))
	put(h, slices.Sorted(slices.Values(c.Scopes))...)
	put(h, c.Audience)
	putLen(h, len(c.Params))
	for _, k := range slices.Sorted(maps.Keys(c.Params)) {
		put(h, k, c.Params[k])
	}
	// Fields added with the further token sources; hashed only when one is
	// set, so the identities of credentials that use none stay as they were.
	if ext := []string{c.Resource, c.SubjectTokenType, c.RequestedTokenType, c.AssertionAudience}; c.Type != "client_credentials" && c.Type != "" || slices.ContainsFunc(ext, func(s string) bool { return s != "" }) {
		put(h, "v2")
		put(h, ext...)
		// A static value is its own token: files and keys name who is asked
		// for which token, so they belong to the identity too.
		put(h, c.SubjectTokenFile, c.AssertionFile, c.ValueFile)
	}
	if c.Value != "" {
		// An inline static value is the token itself: two credentials with
		// different values must never share a cached token. Only its keyed
		// hash enters the identity, never the value.
		mac := hmac.New(sha256.New, valueKey)
		mac.Write([]byte(c.Value.Reveal()))
		put(h, "value", string(mac.Sum(nil)))
	}
	return hex.EncodeToString(h.Sum(nil))
}

func put(h hash.Hash, ss ...string) {
	for _, s := range ss {
		putLen(h, len(s))
		h.Write([]byte(s))
	}
}

func putLen(h hash.Hash, n int) {
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(n)))
}
