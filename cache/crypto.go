package cache

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tokenbroker/tokenbroker/credential"
)

// sealVersion is the first byte of every value written to the shared tier.
// A value with another first byte is an older or foreign format: a miss.
const sealVersion byte = 1

// errUnreadable marks a shared value that no configured key opens (a wrong
// key, corruption, or an older format). It is a miss, never a crash.
var errUnreadable = errors.New("shared value cannot be decrypted with any configured key")

// Sealer encrypts tokens for the shared tier with AES-256-GCM. The first key
// encrypts; every key decrypts, so keys can be rotated across a fleet.
type Sealer struct {
	aeads []cipher.AEAD
	keys  [][]byte // the raw keys, same order, for DerivedKeys
}

// NewSealer builds a Sealer from raw 32-byte keys, the encrypting key first.
func NewSealer(keys [][]byte) (*Sealer, error) {
	if len(keys) == 0 {
		return nil, errors.New("no encryption key")
	}
	s := &Sealer{}
	for i, k := range keys {
		if len(k) != 32 {
			return nil, fmt.Errorf("key %d: %d bytes, want 32 (AES-256)", i+1, len(k))
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		s.aeads = append(s.aeads, aead)
		s.keys = append(s.keys, append([]byte(nil), k...))
	}
	return s, nil
}

// DeriveKey derives a 32-byte key for one purpose from an encryption key
// with HKDF-SHA256 (RFC 5869). Keys for different purposes are independent:
// knowing one (say, a Redis key-name key) reveals nothing of the encryption
// key or of the others. purpose names the use, e.g. "redis key names v1".
func DeriveKey(encryptionKey []byte, purpose string) []byte {
	k, err := hkdf.Key(sha256.New, encryptionKey, nil, "tokenbroker "+purpose, 32)
	if err != nil {
		panic("cache: hkdf: " + err.Error()) // only for a length HKDF cannot give; 32 it always can
	}
	return k
}

// DerivedKeys returns DeriveKey(key, purpose) for every configured key, the
// encrypting key's first: what a fleet that rotates keys needs to keep
// recognising what its older key derived.
func (s *Sealer) DerivedKeys(purpose string) [][]byte {
	out := make([][]byte, len(s.keys))
	for i, k := range s.keys {
		out[i] = DeriveKey(k, purpose)
	}
	return out
}

// sealed is the plaintext layout: every credential.Token field.
type sealed struct {
	Value   string `json:"v"`
	Type    string `json:"t,omitempty"`
	Expiry  int64  `json:"e"` // Unix nanoseconds
	Issued  int64  `json:"i,omitempty"`
	Scope   string `json:"s,omitempty"`
	Binding string `json:"b,omitempty"`
}

// Seal encrypts tok. name (the Redis key) is the associated data, so a value
// copied under another key does not open.
func (s *Sealer) Seal(name string, tok credential.Token) ([]byte, error) {
	p := sealed{Value: tok.Value, Type: tok.Type, Expiry: tok.Expiry.UnixNano(), Scope: tok.Scope, Binding: tok.Binding}
	if !tok.Issued.IsZero() {
		p.Issued = tok.Issued.UnixNano()
	}
	plain, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	aead := s.aeads[0]
	out := make([]byte, 1+aead.NonceSize(), 1+aead.NonceSize()+len(plain)+aead.Overhead())
	out[0] = sealVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, err
	}
	return aead.Seal(out, out[1:], plain, aad(name)), nil
}

// Open decrypts a value written by Seal under name with any configured key.
func (s *Sealer) Open(name string, b []byte) (credential.Token, error) {
	if len(b) == 0 || b[0] != sealVersion {
		return credential.Token{}, errUnreadable
	}
	for _, aead := range s.aeads {
		ns := aead.NonceSize()
		if len(b) < 1+ns+aead.Overhead() {
			return credential.Token{}, errUnreadable
		}
		plain, err := aead.Open(nil, b[1:1+ns], b[1+ns:], aad(name))
		if err != nil {
			continue
		}
		var p sealed
		if err := json.Unmarshal(plain, &p); err != nil || p.Value == "" {
			return credential.Token{}, errUnreadable
		}
		tok := credential.Token{Value: p.Value, Type: p.Type, Expiry: time.Unix(0, p.Expiry), Scope: p.Scope, Binding: p.Binding}
		if p.Issued != 0 {
			tok.Issued = time.Unix(0, p.Issued)
		}
		return tok, nil
	}
	return credential.Token{}, errUnreadable
}

func aad(name string) []byte { return append([]byte{sealVersion}, name...) }
