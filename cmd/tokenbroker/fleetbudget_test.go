package main

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/testpeer"
)

// TestFleetBudgetReplaysMintsRedisMissed: mints counted while a real Redis
// is down are owed to it and replayed once it is back, so the fleet's
// shared count (read by a client of its own) includes them; meanwhile the
// replica counts them itself.
func TestFleetBudgetReplaysMintsRedisMissed(t *testing.T) {
	rdb := testpeer.StartRedis(t)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	rc := &config.Redis{Addrs: []string{rdb.Addr}, KeyPrefix: "owed-test:", EncryptionKeys: config.Keys{key},
		Timeout: config.Duration(200 * time.Millisecond), LockTTL: config.Duration(10 * time.Second)}
	f := newFleetTier(zap.NewNop(), prometheus.NewRegistry())
	ch, err := f.apply(&config.Config{Cache: config.Cache{Redis: rc}})
	if err != nil {
		t.Fatal(err)
	}
	ch.commit()
	// A client of its own reads what Redis holds, with a breaker of its own.
	sealer, err := cache.NewSealer(config.Keys{key})
	if err != nil {
		t.Fatal(err)
	}
	reader, err := cache.NewRedis(cache.RedisOptions{Addrs: []string{rdb.Addr}, KeyPrefix: "owed-test:", Sealer: sealer,
		Timeout: time.Second, Cooldown: 100 * time.Millisecond, Meter: cache.NewL2Metrics(nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reader.Close() })
	ctx, now := context.Background(), time.Now()
	since, until := now.Add(-time.Hour), now.Add(time.Hour)
	shared := func() int64 {
		n, err := reader.MintCounter(time.Hour).Count(ctx, "billing", since, until)
		if err != nil {
			return -1
		}
		return n
	}

	rdb.Kill()
	for i := range 3 {
		if err := f.Add(ctx, "billing", now.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatalf("a mint while Redis is down: %v (memory still counts)", err)
		}
	}
	if n, err := f.Count(ctx, "billing", since, until); err != nil || n != 3 {
		t.Fatalf("count while Redis is down: %d, %v; want this replica's 3", n, err)
	}
	if f.owed.n != 3 {
		t.Fatalf("%d mints owed to Redis, want 3", f.owed.n)
	}
	rdb.Restart() // empty: only replayed mints can be there
	waitFor(t, "owed mints replayed into Redis", 30*time.Second, func() bool {
		_, _ = f.Count(ctx, "billing", since, until) // a budget call: replays once the breaker lets it
		return shared() == 3
	})
	if f.owed.n != 0 {
		t.Fatalf("%d mints still owed after the replay", f.owed.n)
	}
	// A replay repeated (a reply lost after the write) counts each mint once.
	e := cache.NewEvent(now)
	mc := reader.MintCounter(time.Hour)
	for range 2 {
		if err := mc.Record(ctx, "billing", e); err != nil {
			t.Fatal(err)
		}
	}
	if got := shared(); got != 4 {
		t.Fatalf("shared count %d after recording one event twice, want 4", got)
	}
}

// TestOwedMintsAreBounded: past maxOwed, mints are not kept to replay (and
// counted as lost); what is taken and given back stays accounted for.
func TestOwedMintsAreBounded(t *testing.T) {
	var o owedMints
	at := time.Unix(0, 0)
	for i := range maxOwed + 5 {
		o.owe([]string{"a", "b", "c"}[i%3], cache.NewEvent(at), zap.NewNop())
	}
	if o.n != maxOwed || o.dropped != 5 {
		t.Fatalf("%d owed, %d dropped; want %d and 5", o.n, o.dropped, maxOwed)
	}
	batch := o.take(2)
	taken := 0
	for _, b := range batch {
		taken += len(b.events)
	}
	if len(batch) != 2 || o.n != maxOwed-taken {
		t.Fatalf("took %d names (%d mints), %d left of %d", len(batch), taken, o.n, maxOwed)
	}
	o.giveBack(batch[0].name, batch[0].events)
	rest := o.take(repayNames)
	left := 0
	for _, b := range rest {
		left += len(b.events)
	}
	if len(rest) != 2 || left+len(batch[1].events) != maxOwed || o.n != 0 {
		t.Fatalf("after giving one back and taking all: %d names, %d mints, %d still owed", len(rest), left, o.n)
	}
}
