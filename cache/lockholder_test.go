package cache

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokenbroker/tokenbroker/internal/testpeer"
)

// TestDeadLockHolderCostsOneMint: a replica takes the fleet mint lock and
// dies before delivering (its lock stays until its TTL). The two surviving
// replicas, already waiting, contend for the lock again when it expires:
// one mints, the other takes its token — on a cold start and on a refresh
// alike. Before, each waiter timed out on its own clock and minted without
// the lock (two extra mints).
func TestDeadLockHolderCostsOneMint(t *testing.T) {
	const lockTTL = time.Second // real time: Redis expires the lock
	for _, refresh := range []bool{false, true} {
		name := "cold"
		if refresh {
			name = "refresh"
		}
		t.Run(name, func(t *testing.T) {
			c := newClock()
			r := testpeer.StartRedis(t)
			k := newKey(t)
			newL2 := func() *Redis {
				l2, err := NewRedis(RedisOptions{Addrs: []string{r.Addr}, Sealer: mustSealer(t, k), Timeout: time.Second,
					LockTTL: lockTTL, Now: c.Now, Meter: NewL2Metrics(nil)})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = l2.Close() })
				return l2
			}
			src := &source{clock: c, lifetime: time.Hour}
			var survivors []*Tokens
			var l2s []*Redis
			for range 2 {
				l2 := newL2()
				tk, err := New(Options{ExpiryMargin: 30 * time.Second, RefreshAhead: 0.2, Now: c.Now, L2: l2, L2Meter: l2.opts.Meter})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(tk.Close)
				survivors, l2s = append(survivors, tk), append(l2s, l2)
			}
			ctx := context.Background()
			want := "token-1"
			if refresh {
				// Both replicas hold the fleet's token, which reaches its refresh point.
				for _, tk := range survivors {
					if tok, err := tk.Get(ctx, key, src); err != nil || tok.Value != "token-1" {
						t.Fatalf("warm-up: %q %v", tok.Value, err)
					}
					tk.Settle()
				}
				c.Advance(50 * time.Minute)
				want = "token-2"
			}
			// The holder that will die: it takes the lock and never mints;
			// its tier closes as its process would end (no more renewals).
			holder := newL2()
			if _, held, err := holder.Lock(ctx, key); err != nil || !held {
				t.Fatalf("holder lock: %v %v", held, err)
			}
			_ = holder.Close()
			before := src.calls.Load()
			var wg sync.WaitGroup
			got := make([]string, len(survivors))
			errs := make([]error, len(survivors))
			for i, tk := range survivors {
				wg.Go(func() {
					tok, err := tk.Get(ctx, key, src) // a refresh runs in the background
					got[i], errs[i] = tok.Value, err
					tk.Settle()
					if refresh {
						tok, err = tk.Get(ctx, key, src)
						got[i], errs[i] = tok.Value, err
					}
				})
			}
			wg.Wait()
			for i := range survivors {
				if errs[i] != nil || got[i] != want {
					t.Fatalf("survivor %d: %q %v, want %q", i, got[i], errs[i], want)
				}
			}
			if extra := src.calls.Load() - before; extra != 1 {
				t.Fatalf("dead lock holder: %d more mints by 2 survivors, want 1", extra)
			}
			var timedOut float64
			for _, l2 := range l2s {
				timedOut += testutil.ToFloat64(l2.opts.Meter.locks.WithLabelValues(key.Name, "timed_out"))
			}
			if timedOut != 0 {
				t.Fatalf("timed_out = %v: a survivor minted without the lock", timedOut)
			}
		})
	}
}

// TestSlowMintKeepsTheLock: a replica whose mint outlasts lock_ttl keeps
// the fleet lock (it renews it while minting), so a second replica waits
// for its token instead of taking the expired lock and minting again.
func TestSlowMintKeepsTheLock(t *testing.T) {
	const lockTTL = 300 * time.Millisecond // real time: Redis expires the lock
	c := newClock()
	r := testpeer.StartRedis(t)
	k := newKey(t)
	var tiers []*Tokens
	for range 2 {
		l2, err := NewRedis(RedisOptions{Addrs: []string{r.Addr}, Sealer: mustSealer(t, k), Timeout: time.Second,
			LockTTL: lockTTL, Now: c.Now, Meter: NewL2Metrics(nil)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l2.Close() })
		tk, err := New(Options{ExpiryMargin: 30 * time.Second, Now: c.Now, L2: l2, L2Meter: l2.opts.Meter})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(tk.Close)
		tiers = append(tiers, tk)
	}
	ctx := context.Background()
	slow := &source{clock: c, lifetime: time.Hour, gate: make(chan struct{}), started: make(chan struct{}, 1)}
	first := make(chan error, 1)
	go func() {
		_, err := tiers[0].Get(ctx, key, slow)
		first <- err
	}()
	<-slow.started // replica 0 holds the lock and is minting
	second := make(chan string, 1)
	other := &source{clock: c, lifetime: time.Hour}
	go func() {
		tok, err := tiers[1].Get(ctx, key, other)
		if err != nil {
			tok.Value = err.Error()
		}
		second <- tok.Value
	}()
	// Let the mint outlast two lock lifetimes (Redis's clock is real).
	// Without renewal the lock expires and replica 1 takes it and mints.
	expired := time.After(2 * lockTTL)
	select {
	case v := <-second:
		t.Fatalf("replica 1 answered %q while replica 0 was still minting under the lock", v)
	case <-expired:
	}
	close(slow.gate)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if v := <-second; v != "token-1" {
		t.Fatalf("replica 1 got %q, want replica 0's token-1", v)
	}
	if n := other.calls.Load(); n != 0 {
		t.Fatalf("replica 1 minted %d times while the lock holder was minting, want 0", n)
	}
}
