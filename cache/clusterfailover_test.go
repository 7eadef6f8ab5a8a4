package cache

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokenbroker/tokenbroker/internal/testpeer"
)

// staleClusterReplica is a cache on a real Redis Cluster whose client never
// re-reads the slot map by itself (the periodic refresher is off), like a
// replica that had nothing to ask Redis while a master failed over.
func staleClusterReplica(t *testing.T, c *testpeer.Cluster, clk *clock, sealKey []byte) (*Tokens, *Redis) {
	t.Helper()
	l2, err := NewRedis(RedisOptions{
		Addrs:         c.Addrs(),
		KeyPrefix:     "tb-test:",
		Sealer:        mustSealer(t, sealKey),
		Timeout:       time.Second,
		LockTTL:       10 * time.Second,
		Cooldown:      time.Second,
		Now:           clk.Now,
		Meter:         NewL2Metrics(nil),
		topologyEvery: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l2.Close() })
	tk, err := New(Options{ExpiryMargin: 30 * time.Second, RefreshAhead: 0.2, Now: clk.Now, MaxTokens: 1000, L2: l2, L2Meter: l2.opts.Meter})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tk.Close)
	return tk, l2
}

// TestStaleSlotMapAfterFailoverUsesFleetToken: the master holding the
// credential's slot is killed and its replica promoted while three replicas
// hold slot maps from before (go-redis re-reads the map only on MOVED, which
// a dead master never sends, or once a minute). A replica's first L2 call
// then goes to the dead master; it must re-read the map, find the slot on
// the promoted replica and use the fleet's token there rather than mint on
// its own. And a refresh right after the failover, with every replica's map
// stale, costs the fleet exactly one mint: the lock works on the new master.
func TestStaleSlotMapAfterFailoverUsesFleetToken(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	c := testpeer.StartCluster(t)
	clk := newClock()
	src := &source{clock: clk, lifetime: time.Hour}
	sealKey := newKey(t)
	var caches []*Tokens
	var l2s []*Redis
	for range 3 {
		tk, l2 := staleClusterReplica(t, c, clk, sealKey)
		caches, l2s = append(caches, tk), append(l2s, l2)
	}
	ctx := context.Background()

	// Replica 0 mints; replica 1 reads the tier directly (its L1 stays
	// empty) so its client has a slot map; replica 2 only loads the map.
	if tok, err := caches[0].Get(ctx, key, src); err != nil || tok.Value != "token-1" {
		t.Fatalf("cold Get: %q %v", tok.Value, err)
	}
	if _, ok, err := l2s[1].Load(ctx, key); err != nil || !ok {
		t.Fatalf("replica 1 reading the tier before the failover: ok=%v %v", ok, err)
	}
	tokenName, lockName := l2s[0].Names(key.ID)
	l2s[2].masterAddr(ctx, lockName)

	slot := c.Slot(tokenName)
	master := c.MasterOf(slot)
	// The token must be on the replica before its master dies.
	if n, err := master.Client().Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT for the token's replication: %d replicas, %v", n, err)
	}
	master.Kill()
	c.WaitHealthy(30 * time.Second)
	for i, l2 := range l2s {
		if got := l2.masterAddr(ctx, tokenName); got != master.Addr {
			t.Fatalf("replica %d's slot map already re-read (slot %d on %s): the test needs it stale", i, slot, got)
		}
	}

	// A miss on replica 1 right after the failover: the fleet's token.
	tok, err := caches[1].Get(ctx, key, src)
	if err != nil || tok.Value != "token-1" {
		t.Fatalf("Get after the failover: %q %v, want the fleet's token-1", tok.Value, err)
	}
	if got := src.calls.Load(); got != 1 {
		t.Fatalf("%d mints after the failover's first Get, want still 1", got)
	}
	if errs := testutil.ToFloat64(l2s[1].opts.Meter.lookups.WithLabelValues(key.Name, "error")); errs != 0 {
		t.Fatalf("%v L2 lookup errors on the stale replica, want 0", errs)
	}
	if got := l2s[1].masterAddr(ctx, tokenName); got == master.Addr || got == "" {
		t.Fatalf("slot %d still mapped to the dead master %s", slot, got)
	}

	// Forced refresh on all three at once; replicas 0 and 2 still hold the
	// old map. One mint, and every replica ends on it.
	clk.Advance(50 * time.Minute)
	var wg sync.WaitGroup
	errc := make(chan error, 300)
	for i := range 300 {
		wg.Go(func() {
			if _, err := caches[i%3].Get(ctx, key, src); err != nil {
				errc <- err
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("Get during the refresh after the failover: %v", err)
	}
	for _, tk := range caches {
		tk.Settle()
	}
	if got := src.calls.Load(); got != 2 {
		t.Fatalf("refresh after the failover with stale slot maps: %d mints in all, want 2 (1 cold + 1 refresh)", got)
	}
	for i, tk := range caches {
		if tok, err := tk.Get(ctx, key, src); err != nil || tok.Value != "token-2" {
			t.Fatalf("replica %d after the refresh: %q %v, want token-2", i, tok.Value, err)
		}
	}
	var lookupErrs float64
	for _, l2 := range l2s {
		lookupErrs += testutil.ToFloat64(l2.opts.Meter.lookups.WithLabelValues(key.Name, "error"))
		lookupErrs += testutil.ToFloat64(l2.opts.Meter.locks.WithLabelValues(key.Name, "error"))
	}
	if lookupErrs != 0 {
		t.Fatalf("%v L2 lookup or lock errors across the failover, want 0", lookupErrs)
	}
}
