package cache

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/budget"
	"github.com/tokenbroker/tokenbroker/internal/testpeer"
)

func TestMintCounterSharedByFleet(t *testing.T) {
	r := testpeer.StartRedis(t)
	c := newClock()
	k := newKey(t) // one fleet, one key: the counters' names depend on it
	a := newShared(t, r, c, time.Second, k).MintCounter(time.Hour)
	b := newShared(t, r, c, time.Second, k).MintCounter(time.Hour)
	ctx := context.Background()
	now := c.Now()
	for i := range 3 {
		if err := a.Add(ctx, "cust-42", now.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Add(ctx, "cust-42", now.Add(5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	// Both replicas see all four; windows are respected.
	for _, tc := range []struct {
		since, until time.Duration
		want         int64
	}{{0, 10 * time.Minute, 4}, {90 * time.Second, 10 * time.Minute, 2}, {-time.Hour, -time.Minute, 0}} {
		for _, ctr := range []*MintCounter{a, b} {
			n, err := ctr.Count(ctx, "cust-42", now.Add(tc.since), now.Add(tc.until))
			if err != nil || n != tc.want {
				t.Fatalf("count [%v,%v] = %d, %v; want %d", tc.since, tc.until, n, err, tc.want)
			}
		}
	}
	// Events older than keep are trimmed on the next Add.
	if err := a.Add(ctx, "cust-42", now.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n, _ := a.Count(ctx, "cust-42", now.Add(-time.Hour), now.Add(3*time.Hour)); n != 1 {
		t.Fatalf("after trim: %d events, want 1", n)
	}
	// No name in clear.
	rc := redis.NewClient(&redis.Options{Addr: r.Addr, DisableIdentity: true})
	defer rc.Close()
	keys, err := rc.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if strings.Contains(k, "cust-42") {
			t.Fatalf("client id in a Redis key: %s", k)
		}
	}
}

func TestTieredCounterFallsBackWhenRedisIsDown(t *testing.T) {
	r := testpeer.StartRedis(t)
	c := newClock()
	shared := newShared(t, r, c, 200*time.Millisecond, newKey(t)).MintCounter(time.Hour)
	tc := budget.Tiered{Shared: shared, Local: budget.NewMemory()}
	ctx := context.Background()
	now := c.Now()
	if err := tc.Add(ctx, "billing", now); err != nil {
		t.Fatal(err)
	}
	r.Kill()
	if err := tc.Add(ctx, "billing", now.Add(time.Second)); err != nil {
		t.Fatalf("Add with Redis down: %v", err)
	}
	n, err := tc.Count(ctx, "billing", now.Add(-time.Minute), now.Add(time.Minute))
	if err != nil || n != 2 {
		t.Fatalf("local count with Redis down = %d, %v; want 2", n, err)
	}
}
