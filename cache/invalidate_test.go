package cache

import (
	"context"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/credential"
)

// get is one Get on c that must succeed.
func (f *fleet) get(t *testing.T, c *Tokens) credential.Token {
	t.Helper()
	tok, err := c.Get(context.Background(), key, f.src)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// shared is what the fleet's Redis holds for key ("" when nothing).
func (f *fleet) shared(t *testing.T) string {
	t.Helper()
	tok, ok, err := f.l2s[0].Load(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return ""
	}
	return tok.Value
}

// TestInvalidateDropsTheSharedCopy: with a real Redis, an invalidated
// token is not read straight back from the shared tier: the tier's copy
// goes, the next lookup mints, and a replica that starts afterwards gets
// the new token, not the dropped one.
func TestInvalidateDropsTheSharedCopy(t *testing.T) {
	f := newFleet(t, 2)
	a, b := f.caches[0], f.caches[1]
	if tok := f.get(t, a); tok.Value != "token-1" {
		t.Fatalf("first token %q", tok.Value)
	}
	if tok := f.get(t, b); tok.Value != "token-1" || f.src.calls.Load() != 1 {
		t.Fatalf("the second replica got %q after %d mints, want token-1 from Redis", tok.Value, f.src.calls.Load())
	}
	a.Invalidate(key)
	if got := f.shared(t); got != "" {
		t.Fatalf("Redis still holds %q after the invalidation", got)
	}
	if tok := f.get(t, a); tok.Value != "token-2" {
		t.Fatalf("after the invalidation: %q, want a new mint", tok.Value)
	}
	c := f.add(t, time.Second, f.keys...)
	if tok := f.get(t, c); tok.Value != "token-2" || f.src.calls.Load() != 2 {
		t.Fatalf("a new replica got %q after %d mints, want token-2 from Redis", tok.Value, f.src.calls.Load())
	}
}

// TestInvalidateKeepsANewerSharedToken: the drop is a compare-and-delete. A
// token another replica stored after the one invalidated stays in Redis, and
// the invalidating replica adopts it instead of minting.
func TestInvalidateKeepsANewerSharedToken(t *testing.T) {
	f := newFleet(t, 1)
	a := f.caches[0]
	old := f.get(t, a)
	newer := credential.Token{Value: "newer", Type: "Bearer", Issued: f.clock.Now(), Expiry: old.Expiry.Add(time.Minute)}
	if err := f.l2s[0].Store(context.Background(), key, newer, time.Hour); err != nil {
		t.Fatal(err)
	}
	a.Invalidate(key)
	if got := f.shared(t); got != "newer" {
		t.Fatalf("Redis holds %q after the invalidation, want the newer token kept", got)
	}
	if tok := f.get(t, a); tok.Value != "newer" || f.src.calls.Load() != 1 {
		t.Fatalf("after the invalidation: %q after %d mints, want the newer token from Redis", tok.Value, f.src.calls.Load())
	}
}

// TestInvalidatedTokenWrittenBackIsNotAdopted: should the dropped token
// reach Redis again (another replica's offer), the replica that invalidated
// it does not adopt it: it mints, and its new token replaces it in Redis.
func TestInvalidatedTokenWrittenBackIsNotAdopted(t *testing.T) {
	f := newFleet(t, 2)
	a := f.caches[0]
	old := f.get(t, a)
	a.Invalidate(key)
	if err := f.l2s[1].Store(context.Background(), key, old, time.Hour); err != nil {
		t.Fatal(err)
	}
	if tok := f.get(t, a); tok.Value == old.Value {
		t.Fatalf("the invalidated token %q was adopted again from Redis", old.Value)
	}
	if got := f.shared(t); got != "token-2" {
		t.Fatalf("Redis holds %q, want the new token-2", got)
	}
}

// TestInvalidateLocalRereadsTheFleetsToken: InvalidateLocal drops this
// replica's copy only: Redis keeps the token, and the next lookup takes it
// from there without a mint.
func TestInvalidateLocalRereadsTheFleetsToken(t *testing.T) {
	f := newFleet(t, 1)
	a := f.caches[0]
	old := f.get(t, a)
	a.InvalidateLocal(key)
	if got := f.shared(t); got != old.Value {
		t.Fatalf("Redis holds %q after a local invalidation, want %q kept", got, old.Value)
	}
	if tok := f.get(t, a); tok.Value != old.Value || f.src.calls.Load() != 1 {
		t.Fatalf("after a local invalidation: %q after %d mints, want %q from Redis", tok.Value, f.src.calls.Load(), old.Value)
	}
}
