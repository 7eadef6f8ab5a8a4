package cache

import (
	"context"
	"testing"
	"time"

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
	for deadline := time.Now().Add(10 * time.Second); ; <-tick.C {
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
