package cache

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/internal/testpeer"
)

// TestBreakerPerOperationKind: token reads fail (a real ACL denies the token
// keys) while budget counts on other keys succeed in between. The reads'
// breaker still opens after FailureThreshold failures: a healthy key
// elsewhere no longer resets the count of a dead one.
func TestBreakerPerOperationKind(t *testing.T) {
	c := newClock()
	r := testpeer.StartRedis(t)
	ctx := context.Background()
	admin := redis.NewClient(&redis.Options{Addr: r.Addr, DisableIdentity: true})
	defer admin.Close()
	// The replica's user may count budgets but not read tokens.
	if err := admin.Do(ctx, "ACL", "SETUSER", "replica", "on", ">replica-pass-1", "resetkeys", "~tb-test:budget:*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	meter := NewL2Metrics(nil)
	l2, err := NewRedis(RedisOptions{Addrs: []string{r.Addr}, Username: "replica", Password: "replica-pass-1", KeyPrefix: "tb-test:",
		Sealer: mustSealer(t, newKey(t)), Timeout: time.Second, FailureThreshold: 5, Cooldown: time.Minute, Now: c.Now, Meter: meter})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	counter := l2.MintCounter(time.Hour)
	for i := range 5 {
		if _, _, err := l2.Load(ctx, key); err == nil || errors.Is(err, ErrBreakerOpen) {
			t.Fatalf("read %d: %v, want the ACL's refusal", i, err)
		}
		if err := counter.Add(ctx, key.Name, c.Now()); err != nil {
			t.Fatalf("budget count: %v", err)
		}
	}
	if _, _, err := l2.Load(ctx, key); !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("6th read: %v, want the breaker open after 5 failed reads", err)
	}
	if s := testutil.ToFloat64(meter.state); s != 2 {
		t.Fatalf("breaker gauge %v, want 2 (open)", s)
	}
	// Budgets, another kind, keep working.
	if err := counter.Add(ctx, key.Name, c.Now()); err != nil {
		t.Fatalf("budget count with the read breaker open: %v", err)
	}
}
