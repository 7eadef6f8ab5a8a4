package broker

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
)

// A binding is the keyed hash of a client's id and secret stored with the
// token that secret minted: a request is served a cached token only when
// its own secret hashes to the token's binding.
//
// Replicas sharing tokens through Redis must share the binding key, or a
// token one replica stored never matches on another and every request
// there goes to the IdP. The key is, in order of preference:
//   - broker.binding_key_file, when set;
//   - derived with HKDF-SHA256 from each of the fleet's encryption keys
//     (cache.redis.encryption_keys_file), so a fleet shares bindings with
//     no extra setting;
//   - random per process (no fleet: nothing to share).
//
// Rotation follows the encryption keys: new bindings use the key derived
// from the first (encrypting) key, and a binding made with a key derived
// from any listed key is accepted. While a rotation rolls out, replicas
// whose first key differs still accept each other's tokens as long as both
// list both keys, exactly as they can still decrypt each other's tokens.
// A token bound under a key that is no longer listed cannot be decrypted
// either; its client's next request is forwarded to the IdP once.

// bindingInfo is HKDF's info: it separates the binding key from the
// encryption key it is derived from and from any other derived key.
const bindingInfo = "tokenbroker broker secret binding v1"

// bindingKeys are the keys a binding may be made with; the first makes new ones.
type bindingKeys [][]byte

// newBindingKeys picks the binding keys as described above.
func newBindingKeys(explicit []byte, fleet [][]byte) (bindingKeys, error) {
	if len(explicit) > 0 {
		return bindingKeys{explicit}, nil
	}
	if len(fleet) > 0 {
		keys := make(bindingKeys, 0, len(fleet))
		for i, k := range fleet {
			d, err := hkdf.Key(sha256.New, k, nil, bindingInfo, sha256.Size)
			if err != nil {
				return nil, fmt.Errorf("broker: binding key from encryption key %d: %w", i+1, err)
			}
			keys = append(keys, d)
		}
		return keys, nil
	}
	k := make([]byte, sha256.Size)
	_, _ = rand.Read(k)
	return bindingKeys{k}, nil
}

// bind returns req's binding under the first key: the one new tokens carry.
func (ks bindingKeys) bind(req *request) string { return binding(ks[0], req) }

// matches reports whether a token's binding was made from req's secret
// under any of the keys. primary is ks.bind(req), already computed.
func (ks bindingKeys) matches(tokBinding string, req *request, primary string) bool {
	if same(tokBinding, primary) {
		return true
	}
	for _, k := range ks[1:] {
		if same(tokBinding, binding(k, req)) {
			return true
		}
	}
	return false
}

func binding(key []byte, req *request) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(req.clientID))
	m.Write([]byte{0})
	m.Write([]byte(req.secret))
	return hex.EncodeToString(m.Sum(nil))
}

func same(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
