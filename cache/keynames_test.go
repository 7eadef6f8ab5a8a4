package cache

import (
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"hash"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestRedisKeyNamesAreKeyed scans a real Redis after tokens, a held lock
// and budget counts were written: no key name contains a credential name,
// identity, client id, or any unkeyed hash of them (the former layout's
// included), and one credential's token and lock share a hash tag.
func TestRedisKeyNamesAreKeyed(t *testing.T) {
	f := newFleet(t, 1)
	ctx := context.Background()
	brokerKey := Key{ID: "3f1c9a0b7d2e4c6a8b0d1f3e5a7c9b1d3f5e7a9c1b3d5f7e9a1c3b5d7f9e1a3c", Name: "broker:auth0"}
	const clientID = "cust-client-7731"
	for _, k := range []Key{key, brokerKey} {
		if _, err := f.caches[0].Get(ctx, k, f.src); err != nil {
			t.Fatal(err)
		}
	}
	counter := f.l2s[0].MintCounter(time.Hour)
	for _, name := range []string{key.Name, "broker:auth0\x00" + clientID} {
		if err := counter.Add(ctx, name, f.clock.Now()); err != nil {
			t.Fatal(err)
		}
	}
	release, held, err := f.l2s[0].Lock(ctx, key)
	if err != nil || !held {
		t.Fatalf("lock: %v %v", held, err)
	}
	defer release()

	var clear []string
	for _, s := range []string{key.ID, key.Name, brokerKey.ID, brokerKey.Name, clientID, "broker:auth0\x00" + clientID} {
		clear = append(clear, s,
			"tokenbroker.l2.v1\x00"+s, "tokenbroker.budget.v1\x00"+s) // the former layout hashed these
	}
	var forbidden []string
	for _, s := range clear {
		forbidden = append(forbidden, s)
		for _, sum := range [][]byte{sha(sha256.New(), s), sha(sha1.New(), s), sha(md5.New(), s), sha(sha512.New(), s)} {
			h := hex.EncodeToString(sum)
			// Also a prefix: a truncated unkeyed hash confirms a guess just as well.
			forbidden = append(forbidden, h, h[:16], base64.RawURLEncoding.EncodeToString(sum)[:16])
		}
	}
	rc := redis.NewClient(&redis.Options{Addr: f.redis.Addr, DisableIdentity: true})
	defer rc.Close()
	var names []string
	iter := rc.Scan(ctx, 0, "*", 100).Iterator()
	for iter.Next(ctx) {
		names = append(names, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	// Two tokens, one lock, two budget sets.
	if len(names) != 5 {
		t.Fatalf("keys %q, want 5", names)
	}
	shape := regexp.MustCompile(`^tb-test:(token|lock|budget):\{[0-9a-f]{32}\}$`)
	for _, n := range names {
		if !shape.MatchString(n) {
			t.Errorf("key %q: not prefix + kind + {keyed tag}", n)
		}
		for _, f := range forbidden {
			if strings.Contains(n, f) {
				t.Fatalf("key %q contains %q: confirms a name without the key", n, f)
			}
		}
	}
	token, lock := f.l2s[0].Names(key.ID)
	if tag(token) != tag(lock) || tag(token) == "" {
		t.Fatalf("token %q and lock %q do not share a hash tag", token, lock)
	}
	// Keyed: another encryption key names the same credential differently.
	other := newShared(t, f.redis, f.clock, time.Second, newKey(t))
	if o, _ := other.Names(key.ID); tag(o) == tag(token) {
		t.Fatal("key names do not depend on the encryption key")
	}
}

// TestKeyRotationKeepsNamesFound: a replica that moved to a new encrypting
// key (old key second) still finds the token and the budget counts written
// under the old key's names, so a rotation costs no mint and resets no budget.
func TestKeyRotationKeepsNamesFound(t *testing.T) {
	oldKey, newK := newKey(t), newKey(t)
	f := newFleet(t, 1, oldKey)
	ctx := context.Background()
	if _, err := f.caches[0].Get(ctx, key, f.src); err != nil {
		t.Fatal(err)
	}
	old := f.l2s[0].MintCounter(time.Hour)
	now := f.clock.Now()
	for range 2 {
		if err := old.Add(ctx, key.Name, now); err != nil {
			t.Fatal(err)
		}
	}
	rotated := f.add(t, time.Second, newK, oldKey)
	if tok, err := rotated.Get(ctx, key, f.src); err != nil || tok.Value != "token-1" || f.src.calls.Load() != 1 {
		t.Fatalf("rotated replica: %q %v, %d mints; want the old-key token from Redis", tok.Value, err, f.src.calls.Load())
	}
	counter := f.l2s[1].MintCounter(time.Hour)
	if err := counter.Add(ctx, key.Name, now); err != nil {
		t.Fatal(err)
	}
	if n, err := counter.Count(ctx, key.Name, now.Add(-time.Minute), now.Add(time.Minute)); err != nil || n != 3 {
		t.Fatalf("rotated count = %d %v, want 3 (2 under the old name, 1 under the new)", n, err)
	}
	oldName, _ := f.l2s[0].Names(key.ID)
	newName, _ := f.l2s[1].Names(key.ID)
	if oldName == newName {
		t.Fatal("the encrypting key does not name the keys")
	}
}

func sha(h hash.Hash, s string) []byte {
	_, _ = h.Write([]byte(s))
	return h.Sum(nil)
}

// tag is a key name's Redis Cluster hash tag (the text between the first
// '{' and the next '}'), or "" without one.
func tag(name string) string {
	i := strings.IndexByte(name, '{')
	if i < 0 {
		return ""
	}
	j := strings.IndexByte(name[i+1:], '}')
	if j <= 0 {
		return ""
	}
	return name[i+1 : i+1+j]
}
