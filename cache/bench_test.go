package cache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkGetHitEntries measures a warm lookup with 1k and 100k cached
// tokens (max_tokens at its default), visiting keys in a shuffled order.
// "100k" spreads lookups over all 100k tokens, so most of its cost is CPU
// cache misses (several pointers per lookup into a ~100 MB heap); "100k-hot1k"
// looks up 1k of the 100k, like real traffic where a few destinations are
// busy. A lookup is a hash probe, not a scan: with the same working set, the
// cost must not grow with the number of cached tokens. l1-resident-% reports
// how many tokens ristretto holds (the rest are served from their slot after
// a miss, never re-minted).
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
			for pass := range 2 { // the second pass re-offers sets ristretto dropped
				for _, k := range keys {
					if _, err := tk.Get(ctx, k, src); err != nil {
						b.Fatal(pass, err)
					}
				}
				tk.Settle()
			}
			resident := 0
			for _, k := range keys {
				if _, ok := tk.lookup(k.ID); ok {
					resident++
				}
			}
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
			b.ReportMetric(100*float64(resident)/float64(n), "l1-resident-%")
			if got := src.calls.Load(); got != int64(n) {
				b.Fatalf("lookups minted again: %d mints for %d keys", got, n)
			}
		})
	}
}
