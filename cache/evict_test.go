package cache

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// flood asks for n new keys, one mint each.
func flood(t *testing.T, tk *Tokens, src *source, prefix string, n int) {
	t.Helper()
	for i := range n {
		if _, err := tk.Get(context.Background(), Key{ID: fmt.Sprint(prefix, i), Name: "flood"}, src); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMaxTokensBoundsKeys: a flood of new keys (hostile broker clients)
// never holds more than max_tokens slots, and a key in use between the
// newcomers keeps its token: eviction takes the idle ones.
func TestMaxTokensBoundsKeys(t *testing.T) {
	c := newClock()
	tk, err := New(Options{Now: c.Now, MaxTokens: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	src := &source{clock: c, lifetime: time.Hour}
	ctx := context.Background()
	if _, err := tk.Get(ctx, key, src); err != nil {
		t.Fatal(err)
	}
	for i := range 5000 {
		if _, err := tk.Get(ctx, Key{ID: fmt.Sprint("flood-", i), Name: "flood"}, src); err != nil {
			t.Fatal(err)
		}
		if got := tk.slots.total.Load(); got > 100 {
			t.Fatalf("%d keys held, over max_tokens 100", got)
		}
		if tok, err := tk.Get(ctx, key, src); err != nil || tok.Value != "token-1" {
			t.Fatalf("busy key after %d newcomers: %q %v", i+1, tok.Value, err)
		}
	}
	if got := len(tk.Snapshot()); got != 100 {
		t.Fatalf("Snapshot lists %d keys, want 100", got)
	}
}

// TestEvictionSparesMintInFlight: a key whose first mint is still running
// is not evicted by a flood, so the mint's token is found afterwards and the
// key is minted once.
func TestEvictionSparesMintInFlight(t *testing.T) {
	c := newClock()
	tk, err := New(Options{Now: c.Now, MaxTokens: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	slow := &source{clock: c, lifetime: time.Hour, gate: make(chan struct{}), started: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := tk.Get(ctx, key, slow)
		errc <- err
	}()
	<-slow.started
	cancel() // the waiter leaves; the mint goes on, and must keep its slot
	<-errc
	flood(t, tk, &source{clock: c, lifetime: time.Hour}, "flood-", 1000)
	close(slow.gate)
	tk.Settle()
	tok, err := tk.Get(context.Background(), key, slow) // joins or follows the running mint
	if err != nil || tok.Value != "token-1" {
		t.Fatalf("%q %v", tok.Value, err)
	}
	if got := slow.calls.Load(); got != 1 {
		t.Fatalf("mints = %d, want 1: the slot of a mint in flight was evicted", got)
	}
}

// TestEvictionSparesRefreshInFlight: likewise for a background refresh.
func TestEvictionSparesRefreshInFlight(t *testing.T) {
	c := newClock()
	tk, err := New(Options{Now: c.Now, MaxTokens: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	src := &source{clock: c, lifetime: 100 * time.Second}
	ctx := context.Background()
	if _, err := tk.Get(ctx, key, src); err != nil {
		t.Fatal(err)
	}
	src.gate, src.started = make(chan struct{}), make(chan struct{}, 1)
	c.Advance(81 * time.Second)
	if tok, err := tk.Get(ctx, key, src); err != nil || tok.Value != "token-1" {
		t.Fatalf("%q %v", tok.Value, err)
	}
	<-src.started
	flood(t, tk, &source{clock: c, lifetime: time.Hour}, "flood-", 1000)
	close(src.gate)
	tk.Settle()
	if tok, err := tk.Get(ctx, key, src); err != nil || tok.Value != "token-2" {
		t.Fatalf("after the refresh: %q %v", tok.Value, err)
	}
	if got := src.calls.Load(); got != 2 {
		t.Fatalf("mints = %d, want 2", got)
	}
}

// TestEvictionSparesLeased: a key push mode leases keeps its token through
// a flood, so a new subscriber's Lease mints nothing.
func TestEvictionSparesLeased(t *testing.T) {
	c := newClock()
	tk, err := New(Options{Now: c.Now, MaxTokens: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	src := &source{clock: c, lifetime: time.Hour}
	ctx := context.Background()
	if _, err := tk.Lease(ctx, key, src, false); err != nil {
		t.Fatal(err)
	}
	flood(t, tk, &source{clock: c, lifetime: time.Hour}, "flood-", 1000)
	if l, err := tk.Lease(ctx, key, src, false); err != nil || l.Token.Value != "token-1" || src.calls.Load() != 1 {
		t.Fatalf("%q %v, %d mints", l.Token.Value, err, src.calls.Load())
	}
	// Forget still removes it (a removed credential).
	tk.Forget(key)
	if _, ok := tk.Peek(key); ok {
		t.Fatal("forgotten key still held")
	}
}

// TestLookupCountsSurviveEviction: the lookup counters, kept in the slots,
// never go down when slots leave (evicted or forgotten).
func TestLookupCountsSurviveEviction(t *testing.T) {
	c := newClock()
	reg := prometheus.NewRegistry()
	tk, err := New(Options{Now: c.Now, MaxTokens: 10, Meter: NewMetrics(reg)})
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	src := &source{clock: c, lifetime: time.Hour}
	ctx := context.Background()
	for range 3 {
		if _, err := tk.Get(ctx, key, src); err != nil {
			t.Fatal(err)
		}
	}
	want := `
# HELP tokenbroker_cache_lookups_total Token cache lookups by credential and result (hit or miss).
# TYPE tokenbroker_cache_lookups_total counter
tokenbroker_cache_lookups_total{credential="billing",result="hit"} 2
tokenbroker_cache_lookups_total{credential="billing",result="miss"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tokenbroker_cache_lookups_total"); err != nil {
		t.Fatal(err)
	}
	tk.Forget(key)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tokenbroker_cache_lookups_total"); err != nil {
		t.Fatalf("after Forget: %v", err)
	}
	// Evicted by a flood: still counted.
	if _, err := tk.Get(ctx, key, src); err != nil {
		t.Fatal(err)
	}
	flood(t, tk, src, "flood-", 100)
	if tk.slots.get(key.ID) != nil {
		t.Fatal("an idle key survived a flood 10 times max_tokens")
	}
	if n := lookupCount(t, reg, "billing", "miss"); n != 2 {
		t.Fatalf("billing misses after eviction = %v, want 2", n)
	}
}

// lookupCount reads one tokenbroker_cache_lookups_total series from reg.
func lookupCount(t *testing.T, reg *prometheus.Registry, credential, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tokenbroker_cache_lookups_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["credential"] == credential && labels["result"] == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no series for %s %s", credential, result)
	return 0
}

// TestSlotFitsItsSizeClass guards the per-key memory: a slot is one 80-byte
// allocation (Go's size class), a held token one of 128, and a cell 64 bytes
// so that a hit reads one CPU cache line and no cell straddles two.
func TestSlotFitsItsSizeClass(t *testing.T) {
	if got := unsafe.Sizeof(cell{}); got != 64 {
		t.Fatalf("cell is %d bytes, want 64", got)
	}
	// ...and an array of 512 cells or more (every shard's, once the table
	// is larger than the CPU's caches) starts on a cache line (table.go).
	var sh shard
	for size := 512; size <= 1<<16; size *= 2 {
		sh.resize(size)
		if p := uintptr(unsafe.Pointer(&sh.cells[0])); p%64 != 0 {
			t.Fatalf("an array of %d cells starts at %#x, off a 64-byte line", size, p)
		}
	}
	if got := unsafe.Sizeof(shard{}); got != 128 {
		t.Fatalf("shard is %d bytes, want 128 (its lock on lines of its own)", got)
	}
	if got := unsafe.Sizeof(slot{}); got > 80 {
		t.Fatalf("slot is %d bytes, over the 80-byte size class", got)
	}
}
