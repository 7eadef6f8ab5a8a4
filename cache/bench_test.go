package cache

import (
	"context"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/credential"
)

// BenchmarkGetHitEntries measures a warm lookup with 1k and 100k cached
// tokens (max_tokens at its default), visiting keys in a shuffled order.
// "100k" spreads lookups over all 100k tokens, so most of its cost is CPU
// cache misses (the caller's key and its bytes, the table's cell, the
// token, in a heap far larger than the CPU's caches); "100k-hot1k"
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

// BenchmarkGetHitSpread compares, in one run, a hit spread uniformly over
// 1k cached tokens with one spread over 100k: blocks of 10k lookups of each
// alternate, each timed by the thread's CPU clock (not the wall clock, which
// on a shared machine also counts waiting for a CPU), so a noisy neighbour
// slows both alike, and the median of the per-pair ratios is reported
// (issue 13's target: ≤ 2). The keys carry their hash, as the filter's do.
//
// The hit is Held, the filter's lookup: it hands out the held token, so
// the cache reads one cell and the caller reads what it uses of the token.
// ratio-100k/1k is that hit alone; ratio-read-100k/1k adds the caller's
// first read of the token (its value's length: the token's first CPU cache
// line, which the filter reads for the header); ratio-get-100k/1k is Get,
// which copies the whole token out.
//
// A real Check's filter has the Key hot (it has just read its binding), so
// the keys are laid out in the shuffled order and read in sequence, which
// the CPU prefetches. Whatever reading them still costs is the caller's
// part: floor-*-ns is it in a tight loop (where consecutive iterations'
// misses overlap, which a lookup's cannot: a lookup is too many
// instructions for the CPU to run the next one's loads early), caller-*-ns
// the same in a loop as heavy as a lookup: read the Key, then look up one
// hot key of the same cache, minus the hot lookups alone.
// ratio-cache-100k/1k is the ratio of the cache's own parts, the hits with
// caller-*-ns taken off both sides.
// Both sides do identical work per lookup. (Each 1k block starts with its
// working set partly evicted from the CPU's caches by the 100k block before
// it, which flatters the ratios slightly.)
func BenchmarkGetHitSpread(b *testing.B) {
	type side struct {
		tk   *Tokens
		keys []Key // in a shuffled order
		i    int
	}
	ctx := context.Background()
	c := newClock()
	src := &source{clock: c, lifetime: time.Hour}
	mk := func(n int) *side {
		tk, err := New(Options{Now: c.Now})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(tk.Close)
		keys := make([]Key, n)
		for i := range keys {
			keys[i] = Key{ID: fmt.Sprintf("%064x", i), Name: fmt.Sprintf("c%d", i)}.Hashed()
			if _, err := tk.Get(ctx, keys[i], src); err != nil {
				b.Fatal(err)
			}
		}
		tk.Settle()
		// The lookups go through the keys in a shuffled order, but the keys
		// themselves are read in sequence, so the CPU has each one in cache
		// before it is asked, as the filter has its binding's key.
		shuffled := make([]Key, n)
		for i, j := range rand.New(rand.NewPCG(1, uint64(n))).Perm(n) {
			shuffled[i] = keys[j]
		}
		return &side{tk: tk, keys: shuffled}
	}
	small, large := mk(1_000), mk(100_000)
	const block = 10_000
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// timed runs block steps of each, each step given the next shuffled key.
	timed := func(sd *side, step func(k *Key) uint64) time.Duration {
		var sum uint64
		start := threadCPU()
		for range block {
			sum += step(&sd.keys[sd.i])
			if sd.i++; sd.i == len(sd.keys) {
				sd.i = 0
			}
		}
		d := threadCPU() - start
		runtime.KeepAlive(sum)
		return d
	}
	held := func(sd *side, k *Key) *credential.Token {
		tok, err := sd.tk.Held(ctx, *k, src)
		if err != nil {
			b.Fatal(err)
		}
		return tok
	}
	hit := func(sd *side) time.Duration {
		return timed(sd, func(k *Key) uint64 {
			if held(sd, k) == nil {
				b.Fatal("no token")
			}
			return 1
		})
	}
	read := func(sd *side) time.Duration {
		return timed(sd, func(k *Key) uint64 { return uint64(len(held(sd, k).Value)) })
	}
	get := func(sd *side) time.Duration {
		return timed(sd, func(k *Key) uint64 {
			tok, err := sd.tk.Get(ctx, *k, src)
			if err != nil {
				b.Fatal(err)
			}
			return uint64(len(tok.Value))
		})
	}
	floor := func(sd *side) time.Duration {
		return timed(sd, func(k *Key) uint64 { return k.hashOf() })
	}
	caller := func(sd *side) time.Duration {
		hot := &sd.keys[0]
		withKey := timed(sd, func(k *Key) uint64 {
			if held(sd, hot) == nil {
				b.Fatal("no token")
			}
			return k.hashOf()
		})
		alone := timed(sd, func(*Key) uint64 {
			if held(sd, hot) == nil {
				b.Fatal("no token")
			}
			return 1
		})
		return withKey - alone
	}
	ns := func(d time.Duration) float64 { return float64(d) / block }
	var ratios, cacheRatios, readRatios, getRatios []float64
	var ns1k, ns100k, read1k, read100k, get1k, get100k, floors1k, floors100k, callers1k, callers100k []float64
	b.ResetTimer()
	for b.Loop() {
		s, l := hit(small), hit(large)
		rs, rl := read(small), read(large)
		gs, gl := get(small), get(large)
		cs, cl := caller(small), caller(large)
		ratios = append(ratios, float64(l)/float64(s))
		cacheRatios = append(cacheRatios, float64(l-cl)/float64(s-cs))
		readRatios = append(readRatios, float64(rl)/float64(rs))
		getRatios = append(getRatios, float64(gl)/float64(gs))
		ns1k, ns100k = append(ns1k, ns(s)), append(ns100k, ns(l))
		read1k, read100k = append(read1k, ns(rs)), append(read100k, ns(rl))
		get1k, get100k = append(get1k, ns(gs)), append(get100k, ns(gl))
		callers1k, callers100k = append(callers1k, ns(cs)), append(callers100k, ns(cl))
		floors1k, floors100k = append(floors1k, ns(floor(small))), append(floors100k, ns(floor(large)))
	}
	b.StopTimer()
	b.ReportMetric(median(ratios), "ratio-100k/1k")
	b.ReportMetric(median(cacheRatios), "ratio-cache-100k/1k")
	b.ReportMetric(median(readRatios), "ratio-read-100k/1k")
	b.ReportMetric(median(getRatios), "ratio-get-100k/1k")
	b.ReportMetric(median(ns1k), "hit-1k-ns")
	b.ReportMetric(median(ns100k), "hit-100k-ns")
	b.ReportMetric(median(read1k), "read-1k-ns")
	b.ReportMetric(median(read100k), "read-100k-ns")
	b.ReportMetric(median(get1k), "get-1k-ns")
	b.ReportMetric(median(get100k), "get-100k-ns")
	b.ReportMetric(median(floors1k), "floor-1k-ns")
	b.ReportMetric(median(floors100k), "floor-100k-ns")
	b.ReportMetric(median(callers1k), "caller-1k-ns")
	b.ReportMetric(median(callers100k), "caller-100k-ns")
	if got := src.calls.Load(); got != 101_000 {
		b.Fatalf("lookups minted again: %d mints for 101000 keys", got)
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkKeyAccessFloor is the part of BenchmarkGetHitEntries that is
// not the cache: reading the shuffled caller's Key and hashing its ID (the
// first thing a lookup does). Spread over 100k keys it is CPU cache misses
// too, so the cache's own cost is the difference.
func BenchmarkKeyAccessFloor(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("%dk", n/1000), func(b *testing.B) {
			keys := make([]Key, n)
			for i := range keys {
				keys[i] = Key{ID: fmt.Sprintf("%064x", i), Name: fmt.Sprintf("c%d", i)}
			}
			order := rand.New(rand.NewPCG(1, 2)).Perm(n)
			seed := maphash.MakeSeed()
			var sum uint64
			i := 0
			for b.Loop() {
				sum += maphash.String(seed, keys[order[i]].ID)
				if i++; i == n {
					i = 0
				}
			}
			runtime.KeepAlive(sum)
		})
	}
}

// BenchmarkKeyMemory fills 100k keys, each with one cached token, and
// reports the live heap per key after a GC: the cache's per-key state (its
// cell, slot and token), plus the source's ~16-byte token value. The
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
