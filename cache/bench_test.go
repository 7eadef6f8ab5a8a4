package cache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

// BenchmarkGetHitEntries measures a warm lookup with 1k and 100k cached
// tokens (max_tokens at its default), visiting keys in a shuffled order.
// "100k" spreads lookups over all 100k tokens, so most of its cost is CPU
// cache misses (the map's group, the key's bytes, the slot, the token: a
// few lines each, in a heap far larger than the CPU's caches); "100k-hot1k"
// looks up 1k of the 100k, like real traffic where a few destinations are
// busy. A lookup is one hash probe, not a scan: with the same working set,
// the cost must not grow with the number of cached tokens, and spread over
// all 100k it must stay within 2× the 1k case (issue 13).
func BenchmarkGetHitEntries(b *testing.B) {
	for _, bc := range []struct {
		name      string
		n, lookup int
	}{{"1k", 1_000, 1_000}, {"100k", 100_000, 100_000}, {"100k-hot1k", 100_000, 1_000}} {
		n := bc.n
		b.Run(bc.name, func(b *testing.B) {
			c := newClock()
			tk, err := New(Options{Now: c.Now})
			if err != nil {
				b.Fatal(err)
			}
			defer tk.Close()
			src := &source{clock: c, lifetime: time.Hour}
			keys := make([]Key, n)
			for i := range keys {
				keys[i] = Key{ID: fmt.Sprintf("%064x", i), Name: fmt.Sprintf("c%d", i)}
			}
			ctx := context.Background()
			for _, k := range keys {
				if _, err := tk.Get(ctx, k, src); err != nil {
					b.Fatal(err)
				}
			}
			tk.Settle()
			order := rand.New(rand.NewPCG(1, 2)).Perm(n)[:bc.lookup]
			if got := src.calls.Load(); got != int64(n) {
				b.Fatalf("%d mints for %d keys", got, n)
			}
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				if _, err := tk.Get(ctx, keys[order[i]], src); err != nil {
					b.Fatal(err)
				}
				if i++; i == len(order) {
					i = 0
				}
			}
			b.StopTimer()
			if got := src.calls.Load(); got != int64(n) {
				b.Fatalf("lookups minted again: %d mints for %d keys", got, n)
			}
		})
	}
}

// BenchmarkKeyMemory fills 100k keys, each with one cached token, and
// reports the live heap per key after a GC: the cache's per-key state (its
// map entry, slot and token), plus the source's ~16-byte token value. The
// keys' own ID and Name strings are allocated before the baseline and not
// counted. One iteration is the whole fill; run it with -benchtime 1x.
func BenchmarkKeyMemory(b *testing.B) {
	const n = 100_000
	for b.Loop() {
		c := newClock()
		keys := make([]Key, n)
		for i := range keys {
			keys[i] = Key{ID: fmt.Sprintf("%064x", i), Name: fmt.Sprintf("c%d", i)}
		}
		src := &source{clock: c, lifetime: time.Hour}
		before := liveHeap()
		tk, err := New(Options{Now: c.Now, MaxTokens: n})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		for _, k := range keys {
			if _, err := tk.Get(ctx, k, src); err != nil {
				b.Fatal(err)
			}
		}
		tk.Settle()
		after := liveHeap()
		b.ReportMetric(float64(after-before)/n, "B/key")
		runtime.KeepAlive(keys)
		tk.Close()
	}
}

func liveHeap() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
