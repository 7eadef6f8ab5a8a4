package cache

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestReconfigureMarginAppliesToHeldTokens: a larger expiry_margin takes a
// cached token out of service at the next lookup, with no mint for the
// change itself.
func TestReconfigureMarginAppliesToHeldTokens(t *testing.T) {
	c := newClock()
	tk := newTokens(t, c, 30*time.Second)
	src := &source{clock: c, lifetime: 10 * time.Minute}
	ctx := context.Background()
	if _, err := tk.Get(ctx, key, src); err != nil {
		t.Fatal(err)
	}
	tk.Settle()
	c.Advance(5 * time.Minute)
	if err := tk.Reconfigure(Settings{MaxTokens: 1000, ExpiryMargin: 4*time.Minute + 59*time.Second, RefreshAhead: 0.2}); err != nil {
		t.Fatal(err)
	}
	if src.calls.Load() != 1 {
		t.Fatalf("Reconfigure minted: %d mints", src.calls.Load())
	}
	if _, ok := tk.Peek(key); !ok {
		t.Fatal("token 1s inside the new margin's limit not held")
	}
	c.Advance(time.Second) // now exactly at expiry − new margin
	if _, ok := tk.Peek(key); ok {
		t.Fatal("Peek hands out a token inside the new margin")
	}
	tok, err := tk.Get(ctx, key, src)
	if err != nil || tok.Value != "token-2" {
		t.Fatalf("Get under the new margin: %q %v, want a fresh token", tok.Value, err)
	}
	if got := tk.ExpiryMargin(); got != 4*time.Minute+59*time.Second {
		t.Fatalf("ExpiryMargin() = %v", got)
	}
}

// TestReconfigureRefreshAheadAppliesToNextLookup: a larger refresh_ahead
// puts a held token in its refresh window at once.
func TestReconfigureRefreshAheadAppliesToNextLookup(t *testing.T) {
	c := newClock()
	tk := newTokens(t, c, 0)
	src := &source{clock: c, lifetime: 100 * time.Second}
	ctx := context.Background()
	if _, err := tk.Get(ctx, key, src); err != nil {
		t.Fatal(err)
	}
	tk.Settle()
	c.Advance(50 * time.Second) // refresh_ahead 0.2: not before 80s
	if _, err := tk.Get(ctx, key, src); err != nil {
		t.Fatal(err)
	}
	tk.Settle()
	if src.calls.Load() != 1 {
		t.Fatalf("refreshed before its time: %d mints", src.calls.Load())
	}
	if err := tk.Reconfigure(Settings{MaxTokens: 1000, RefreshAhead: 0.6}); err != nil {
		t.Fatal(err)
	}
	tok, err := tk.Get(ctx, key, src) // past 40% of the lifetime: refreshes in the background
	if err != nil || tok.Value != "token-1" {
		t.Fatalf("during refresh: %q %v", tok.Value, err)
	}
	tk.Settle()
	if src.calls.Load() != 2 {
		t.Fatalf("mints = %d, want 2 (one refresh under the new refresh_ahead)", src.calls.Load())
	}
}

// TestReconfigureMaxTokensWithoutMinting: under concurrent lookups of many
// keys, max_tokens changes several times; while it holds every key, no key
// is minted twice, and a smaller one evicts down to it at once.
func TestReconfigureMaxTokensWithoutMinting(t *testing.T) {
	c := newClock()
	tk := newTokens(t, c, 30*time.Second)
	src := &source{clock: c, lifetime: time.Hour}
	ctx := context.Background()
	keys := make([]Key, 200)
	for i := range keys {
		keys[i] = Key{ID: fmt.Sprintf("id-%d", i), Name: fmt.Sprintf("c%d", i)}
		if _, err := tk.Get(ctx, keys[i], src); err != nil {
			t.Fatal(err)
		}
	}
	tk.Settle()

	const workers, rounds = 4, 300
	var failed atomic.Int64
	var wg sync.WaitGroup
	progress := make(chan struct{}, workers*rounds)
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				if _, err := tk.Get(ctx, keys[(w*rounds+i)%len(keys)], src); err != nil {
					failed.Add(1)
				}
				progress <- struct{}{}
			}
		})
	}
	for _, n := range []int64{200, 5000, 250, 1000} {
		for range 50 { // let lookups run against each size
			<-progress
		}
		if err := tk.Reconfigure(Settings{MaxTokens: n, ExpiryMargin: 30 * time.Second, RefreshAhead: 0.2}); err != nil {
			t.Fatal(err)
		}
		if got := tk.slots.total.Load(); got > n {
			t.Fatalf("%d keys held, over max_tokens %d", got, n)
		}
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d lookups failed", failed.Load())
	}
	if got := src.calls.Load(); got != int64(len(keys)) {
		t.Fatalf("%d mints for %d keys: resizing minted again", got, len(keys))
	}
	if s := tk.Settings(); s.MaxTokens != 1000 {
		t.Fatalf("Settings() = %+v", s)
	}

	// Smaller than the keys held: evicted down to it at once; the keys kept
	// are still served without a mint.
	if err := tk.Reconfigure(Settings{MaxTokens: 50, ExpiryMargin: 30 * time.Second, RefreshAhead: 0.2}); err != nil {
		t.Fatal(err)
	}
	if got := tk.slots.total.Load(); got != 50 {
		t.Fatalf("%d keys held after max_tokens 50", got)
	}
	for _, st := range tk.Snapshot() {
		if _, err := tk.Get(ctx, st.Key, src); err != nil {
			t.Fatal(err)
		}
	}
	if got := src.calls.Load(); got != int64(len(keys)) {
		t.Fatalf("a key kept after shrinking minted again: %d mints", got)
	}
}
