package cache

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestLocalKeyStaysOutOfRedis: a Local key (a static value) is never
// offered to or looked up in the shared tier, while an ordinary key is.
func TestLocalKeyStaysOutOfRedis(t *testing.T) {
	f := newFleet(t, 2)
	rc := redis.NewClient(&redis.Options{Addr: f.redis.Addr, DisableIdentity: true})
	defer rc.Close()
	ctx := context.Background()
	count := func() int {
		t.Helper()
		keys, err := rc.Keys(ctx, "*").Result()
		if err != nil {
			t.Fatal(err)
		}
		return len(keys)
	}

	local := Key{ID: "static-identity", Name: "maps", Local: true}
	for _, c := range f.caches {
		if _, err := c.Get(ctx, local, f.src); err != nil {
			t.Fatal(err)
		}
	}
	f.settle()
	if n := count(); n != 0 {
		t.Fatalf("a Local key left %d keys in Redis, want 0", n)
	}
	// Each replica asked its own source: nothing came from the fleet.
	if got := f.src.calls.Load(); got != 2 {
		t.Fatalf("Local key: %d source calls over 2 replicas, want 2", got)
	}
	// Across a refresh too.
	f.clock.Advance(50 * time.Minute)
	for _, c := range f.caches {
		if _, err := c.Get(ctx, local, f.src); err != nil {
			t.Fatal(err)
		}
	}
	f.settle()
	if n := count(); n != 0 {
		t.Fatalf("a Local key's refresh left %d keys in Redis, want 0", n)
	}

	// The control: the same fleet shares an ordinary key through Redis.
	shared := Key{ID: "minted-identity", Name: "api"}
	if _, err := f.caches[0].Get(ctx, shared, f.src); err != nil {
		t.Fatal(err)
	}
	f.settle()
	if n := count(); n == 0 {
		t.Fatal("an ordinary key was not shared through Redis: the test proves nothing")
	}
}
