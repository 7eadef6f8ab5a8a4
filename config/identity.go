package config

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"maps"
	"slices"
)

// Identity returns a hex SHA-256 over the fields that decide which token the
// IdP issues: type, token_url, client_id, auth_method, scopes, audience and
// params. Scopes and params are sorted so their order does not matter; the
// secret, header, format and timeouts are left out, so rotating a secret or
// moving the token to another header keeps cached tokens. It is the token
// cache key: compute it once per credential, not per request.
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
