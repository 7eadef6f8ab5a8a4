package cache

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

var errBudget = errors.New("budget used up")

// TestMayMintRefusal: a refused mint keeps serving the valid token until it
// expires, puts no back-off on the key, and then fails with the refusal.
func TestMayMintRefusal(t *testing.T) {
	clk := newClock()
	var refuse atomic.Bool
	tokens, err := New(Options{Now: clk.Now, MayMint: func(Key) error {
		if refuse.Load() {
			return errBudget
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer tokens.Close()
	src := &source{clock: clk, lifetime: time.Hour}
	key := Key{ID: "k", Name: "billing"}
	ctx := context.Background()
	first, err := tokens.Get(ctx, key, src)
	if err != nil {
		t.Fatal(err)
	}
	refuse.Store(true)
	// Into the refresh-ahead window: the refresh is refused, the token is still served.
	clk.Advance(55 * time.Minute)
	for range 3 {
		tok, err := tokens.Get(ctx, key, src)
		if err != nil || tok.Value != first.Value {
			t.Fatalf("refused refresh: got %q, %v; want the cached token", tok.Value, err)
		}
		tokens.Settle()
	}
	clk.Advance(6 * time.Minute) // expired
	_, err = tokens.Get(ctx, key, src)
	var ue *UnavailableError
	if !errors.Is(err, errBudget) || !errors.As(err, &ue) {
		t.Fatalf("after expiry: %v, want UnavailableError wrapping the refusal", err)
	}
	if n := src.calls.Load(); n != 1 {
		t.Errorf("source called %d times, want 1", n)
	}
	// No back-off was recorded: once allowed, the very next Get mints.
	refuse.Store(false)
	if _, err := tokens.Get(ctx, key, src); err != nil {
		t.Errorf("after the gate opens: %v", err)
	}
	st := tokens.Snapshot()
	if len(st) != 1 || st[0].Failures != 0 || !st[0].HasToken || st[0].Key != key || st[0].LastMint.IsZero() {
		t.Errorf("snapshot %+v", st)
	}
	if tok, ok := tokens.Peek(key); !ok || tok.Value == first.Value {
		t.Errorf("Peek = %q, %v; want the new token", tok.Value, ok)
	}
}
