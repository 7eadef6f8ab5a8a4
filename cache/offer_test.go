package cache

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/credential"
	"github.com/tokenbroker/tokenbroker/internal/testpeer"
)

// TestLocalMintsOfferedWhenTierReturns: with Redis down, two replicas mint
// a token each. When Redis is back they offer them: the fleet converges on
// one token (the first offer's) with no further mint, and a replica started
// afterwards takes it from Redis.
func TestLocalMintsOfferedWhenTierReturns(t *testing.T) {
	c := newClock()
	f := &fleet{redis: testpeer.StartRedis(t), clock: c, src: &source{clock: c, lifetime: time.Hour}, keys: [][]byte{newKey(t)}}
	add := func() *Tokens {
		l2 := newShared(t, f.redis, c, time.Second, f.keys...)
		tk, err := New(Options{ExpiryMargin: 30 * time.Second, Now: c.Now, L2: l2, L2Meter: l2.opts.Meter, OfferEvery: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(tk.Close)
		f.caches, f.l2s = append(f.caches, tk), append(f.l2s, l2)
		return tk
	}
	a, b := add(), add()
	f.redis.Kill()
	ctx := context.Background()
	ta, errA := a.Get(ctx, key, f.src)
	tb, errB := b.Get(ctx, key, f.src)
	if errA != nil || errB != nil || ta.Value == tb.Value || f.src.calls.Load() != 2 {
		t.Fatalf("with Redis down: %q %v, %q %v, %d mints; want one local mint each", ta.Value, errA, tb.Value, errB, f.src.calls.Load())
	}
	f.redis.Restart()
	c.Advance(2 * time.Second) // past the breakers' cool-down
	// Both converge on one of the two tokens, minting nothing.
	var one string
	tick := time.NewTicker(10 * time.Millisecond) // polling pace
	defer tick.Stop()
	for deadline := time.Now().Add(30 * time.Second); ; <-tick.C { // a bound, not a wait: a loaded machine restarts Redis slowly
		va, _ := a.Peek(key)
		vb, _ := b.Peek(key)
		if va.Value == vb.Value {
			one = va.Value
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no convergence: a %q, b %q", va.Value, vb.Value)
		}
	}
	if one != ta.Value && one != tb.Value {
		t.Fatalf("converged on %q, want one of the local tokens", one)
	}
	a.Settle()
	if got, err := a.Get(ctx, key, f.src); err != nil || got.Value != one {
		t.Fatalf("a serves %q %v, want %q", got.Value, err, one)
	}
	late := add()
	if got, err := late.Get(ctx, key, f.src); err != nil || got.Value != one {
		t.Fatalf("late replica: %q %v, want %q from Redis", got.Value, err, one)
	}
	if n := f.src.calls.Load(); n != 2 {
		t.Fatalf("%d mints, want 2 (the two local ones)", n)
	}
}

// TestOfferReplacesTokenDueForRefresh: Redis holds a token due for refresh
// when a replica that minted on its own while Redis was frozen offers a
// fresh one. The offer replaces it (a fleet must not converge on a token
// about to be refreshed), and the replica holding the old token takes the
// new one at its refresh instead of minting.
func TestOfferReplacesTokenDueForRefresh(t *testing.T) {
	c := newClock()
	r := testpeer.StartRedis(t)
	keys := [][]byte{newKey(t)}
	src := &source{clock: c, lifetime: time.Hour}
	newCache := func(timeout time.Duration) (*Tokens, *Redis) {
		l2 := newShared(t, r, c, timeout, keys...)
		tk, err := New(Options{ExpiryMargin: 30 * time.Second, RefreshAhead: 0.2, Now: c.Now, L2: l2, L2Meter: l2.opts.Meter, OfferEvery: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(tk.Close)
		return tk, l2
	}
	a, l2a := newCache(time.Second)
	b, _ := newCache(200 * time.Millisecond)
	ctx := context.Background()
	if tok, err := a.Get(ctx, key, src); err != nil || tok.Value != "token-1" {
		t.Fatalf("a: %q %v", tok.Value, err)
	}
	a.Settle()
	c.Advance(50 * time.Minute) // token-1 is due for refresh
	r.Pause()
	tok, err := b.Get(ctx, key, src) // Redis answers nothing: a local mint
	r.Resume()
	if err != nil || tok.Value != "token-2" {
		t.Fatalf("b with Redis frozen: %q %v, want a local token-2", tok.Value, err)
	}
	tick := time.NewTicker(10 * time.Millisecond) // polling pace
	defer tick.Stop()
	for deadline := time.Now().Add(10 * time.Second); ; <-tick.C {
		if got, ok, err := l2a.Load(ctx, key); err == nil && ok && got.Value == "token-2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("b's fresh token did not replace the one due for refresh")
		}
	}
	// a's next hit starts its refresh, which finds token-2 in Redis.
	if tok, err := a.Get(ctx, key, src); err != nil || tok.Value != "token-1" {
		t.Fatalf("a: %q %v", tok.Value, err)
	}
	a.Settle()
	if tok, err := a.Get(ctx, key, src); err != nil || tok.Value != "token-2" || src.calls.Load() != 2 {
		t.Fatalf("a after its refresh: %q %v, %d mints; want token-2 and no third mint", tok.Value, err, src.calls.Load())
	}
}

// TestOffersBounded: a flood of keys minted while the tier is away queues at
// most maxOffers tokens to offer; the rest are shared at their next refresh.
func TestOffersBounded(t *testing.T) {
	c := newClock()
	r := testpeer.StartRedis(t)
	l2 := newShared(t, r, c, 100*time.Millisecond, newKey(t))
	r.Kill()
	tk, err := New(Options{ExpiryMargin: 30 * time.Second, Now: c.Now, L2: l2, L2Meter: l2.opts.Meter, OfferEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	for i := range maxOffers + 10 {
		s := tk.pin(Key{ID: fmt.Sprint("id-", i), Name: "flood"})
		s.unpin()
		tk.pendOffer(s, tk.hold(credential.Token{Value: fmt.Sprint("t", i), Expiry: c.Now().Add(time.Hour)}, c.Now()))
	}
	tk.offerMu.Lock()
	n := len(tk.offers)
	tk.offerMu.Unlock()
	if n != maxOffers {
		t.Fatalf("%d tokens queued to offer, want the bound %d", n, maxOffers)
	}
}
