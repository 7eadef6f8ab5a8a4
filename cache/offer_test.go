package cache

import (
	"context"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/testpeer"
)

// TestLocalMintsOfferedWhenTierReturns: with Redis down, two replicas mint
// a token each. When Redis is back they offer them: the fleet converges on
// one token with no further mint, and a replica started afterwards takes
// it from Redis.
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
	c.Advance(time.Second) // b's token expires later than a's
	tb, errB := b.Get(ctx, key, f.src)
	if errA != nil || errB != nil || ta.Value == tb.Value || f.src.calls.Load() != 2 {
		t.Fatalf("with Redis down: %q %v, %q %v, %d mints; want one local mint each", ta.Value, errA, tb.Value, errB, f.src.calls.Load())
	}
	f.redis.Restart()
	c.Advance(2 * time.Second) // past the breakers' cool-down
	// Both converge on the token that lives longer (b's), minting nothing.
	tick := time.NewTicker(10 * time.Millisecond) // polling pace
	defer tick.Stop()
	for deadline := time.Now().Add(30 * time.Second); ; <-tick.C { // a bound, not a wait: a loaded machine restarts Redis slowly
		va, _ := a.Peek(key)
		vb, _ := b.Peek(key)
		if va.Value == tb.Value && vb.Value == tb.Value {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no convergence: a %q, b %q, want %q on both", va.Value, vb.Value, tb.Value)
		}
	}
	a.Settle()
	if got, err := a.Get(ctx, key, f.src); err != nil || got.Value != tb.Value {
		t.Fatalf("a serves %q %v, want %q", got.Value, err, tb.Value)
	}
	late := add()
	if got, err := late.Get(ctx, key, f.src); err != nil || got.Value != tb.Value {
		t.Fatalf("late replica: %q %v, want %q from Redis", got.Value, err, tb.Value)
	}
	if n := f.src.calls.Load(); n != 2 {
		t.Fatalf("%d mints, want 2 (the two local ones)", n)
	}
}
