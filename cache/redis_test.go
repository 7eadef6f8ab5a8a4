package cache

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tokenbroker/tokenbroker/internal/testpeer"
)

// fleet is N caches sharing one real Redis and one IdP (src), like N replicas.
type fleet struct {
	redis  *testpeer.Redis
	clock  *clock
	src    *source
	caches []*Tokens
	l2s    []*Redis
	keys   [][]byte // the fleet's encryption keys
}

func newShared(t *testing.T, r *testpeer.Redis, c *clock, timeout time.Duration, keys ...[]byte) *Redis {
	t.Helper()
	l2, err := NewRedis(RedisOptions{
		Addrs:     []string{r.Addr},
		KeyPrefix: "tb-test:",
		Sealer:    mustSealer(t, keys...),
		Timeout:   timeout,
		LockTTL:   10 * time.Second,
		Cooldown:  time.Second,
		Now:       c.Now,
		Meter:     NewL2Metrics(nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l2.Close() })
	return l2
}

func (f *fleet) add(t *testing.T, timeout time.Duration, keys ...[]byte) *Tokens {
	t.Helper()
	l2 := newShared(t, f.redis, f.clock, timeout, keys...)
	tk, err := New(Options{ExpiryMargin: 30 * time.Second, RefreshAhead: 0.2, Now: f.clock.Now, MaxTokens: 1000, L2: l2, L2Meter: l2.opts.Meter})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tk.Close)
	f.caches = append(f.caches, tk)
	f.l2s = append(f.l2s, l2)
	return tk
}

func newFleet(t *testing.T, n int, keys ...[]byte) *fleet {
	t.Helper()
	c := newClock()
	f := &fleet{redis: testpeer.StartRedis(t), clock: c, src: &source{clock: c, lifetime: time.Hour}}
	if len(keys) == 0 {
		keys = [][]byte{newKey(t)}
	}
	f.keys = keys
	for range n {
		f.add(t, time.Second, keys...)
	}
	return f
}

// load runs n concurrent Gets spread over the caches and returns the errors
// and the token values seen. When the source has a gate, it opens once every
// Get has started, so the whole herd arrives before the first mint ends.
func (f *fleet) load(n int) (errs []error, values map[string]int) {
	var wg, ready sync.WaitGroup
	var mu sync.Mutex
	values = map[string]int{}
	ready.Add(n)
	if f.src.gate != nil {
		go func() {
			ready.Wait()
			close(f.src.gate)
		}()
	}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ready.Done()
			tok, err := f.caches[i%len(f.caches)].Get(context.Background(), key, f.src)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			values[tok.Value]++
		}()
	}
	wg.Wait()
	return errs, values
}

func (f *fleet) settle() {
	for _, c := range f.caches {
		c.Settle()
	}
}

func TestFleetOfThreeMintsOncePerLifetime(t *testing.T) {
	f := newFleet(t, 3)
	f.src.gate = make(chan struct{})
	errs, values := f.load(3000)
	if len(errs) > 0 {
		t.Fatalf("%d failed Gets, first: %v", len(errs), errs[0])
	}
	if got := f.src.calls.Load(); got != 1 {
		t.Fatalf("cold start: %d mints across 3 replicas, want 1 (values %v)", got, values)
	}
	f.settle()
	f.src.gate = nil

	// Forced refresh: every replica reaches the refresh point at once.
	f.clock.Advance(50 * time.Minute)
	errs, values = f.load(3000)
	if len(errs) > 0 || values["token-1"]+values["token-2"] != 3000 {
		t.Fatalf("refresh must not block or fail a Get: %d errors, values %v", len(errs), values)
	}
	f.settle()
	if got := f.src.calls.Load(); got != 2 {
		t.Fatalf("after a forced refresh: %d mints, want 2", got)
	}
	// Every replica has picked up the one new token.
	if _, values = f.load(30); values["token-2"] != 30 {
		t.Fatalf("after refresh: values %v, want token-2 everywhere", values)
	}
	var acquired, waited float64
	for _, l2 := range f.l2s {
		acquired += testutil.ToFloat64(l2.opts.Meter.locks.WithLabelValues(key.Name, "acquired"))
		waited += testutil.ToFloat64(l2.opts.Meter.locks.WithLabelValues(key.Name, "waited"))
	}
	// A replica may take the lock after the winner released it and find the
	// winner's token on its second look: then it holds the lock but mints not.
	if acquired < 2 {
		t.Fatalf("lock acquired %v times, want at least one per mint", acquired)
	}
	t.Logf("3 replicas with Redis: 3000 cold Gets -> 1 mint, forced refresh -> 1 more; lock acquired %v, waits %v", acquired, waited)
}

func TestFleetWithoutRedisMintsPerReplica(t *testing.T) {
	// The baseline the shared tier improves on: N replicas, N mints.
	c := newClock()
	src := &source{clock: c, lifetime: time.Hour}
	for range 3 {
		tk := newTokens(t, c, 30*time.Second)
		for range 100 {
			if _, err := tk.Get(context.Background(), key, src); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := src.calls.Load(); got != 3 {
		t.Fatalf("3 replicas without Redis: %d mints, want 3", got)
	}
}

func TestRedisKilledMidLoadNoFailedGets(t *testing.T) {
	f := newFleet(t, 3)
	if errs, _ := f.load(30); len(errs) > 0 {
		t.Fatal(errs[0])
	}
	f.settle()

	// Load with misses: every 20th Get forgets its cache's token, so it has
	// to go through L2 (or, with Redis gone, a local mint).
	const workers, perWorker = 12, 200
	var failed atomic.Int64
	var done atomic.Int64
	half := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tk := f.caches[w%3]
			for i := range perWorker {
				if i%20 == 0 {
					tk.InvalidateLocal(key) // this replica only: the miss goes to L2
				}
				if _, err := tk.Get(context.Background(), key, f.src); err != nil {
					failed.Add(1)
				}
				if done.Add(1) == workers*perWorker/2 {
					once.Do(func() { close(half) })
				}
			}
		}()
	}
	<-half
	f.redis.Kill()
	// A replica starting while Redis is down still serves.
	late := f.add(t, time.Second, f.keys...)
	if _, err := late.Get(context.Background(), key, f.src); err != nil {
		t.Fatalf("cold Get with Redis down: %v", err)
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d Gets failed while Redis died", n)
	}
	f.settle()

	// Redis back (empty): once the breaker's cool-down passes, a mint is
	// shared again and a new replica takes it from Redis instead of minting.
	f.redis.Restart()
	f.clock.Advance(2 * time.Second)
	f.caches[0].Invalidate(key)
	tok0, err := f.caches[0].Get(context.Background(), key, f.src)
	if err != nil {
		t.Fatal(err)
	}
	before := f.src.calls.Load()
	fresh := f.add(t, time.Second, f.keys...)
	tok, err := fresh.Get(context.Background(), key, f.src)
	if err != nil || tok.Value != tok0.Value {
		t.Fatalf("after Redis came back: %q %v, want %q from L2", tok.Value, err, tok0.Value)
	}
	if got := f.src.calls.Load(); got != before {
		t.Fatalf("new replica minted (%d -> %d) instead of using L2", before, got)
	}
	if hits := testutil.ToFloat64(f.l2s[len(f.l2s)-1].opts.Meter.lookups.WithLabelValues(key.Name, "hit")); hits != 1 {
		t.Fatalf("L2 hits on the new replica = %v, want 1", hits)
	}
	t.Logf("mints over the run with Redis killed mid-load: %d", f.src.calls.Load())
}

func TestSlowRedisKeepsL1Fast(t *testing.T) {
	const timeout = 500 * time.Millisecond
	c := newClock()
	f := &fleet{redis: testpeer.StartRedis(t), clock: c, src: &source{clock: c, lifetime: time.Hour}}
	k := newKey(t)
	tk := f.add(t, timeout, k)
	if _, err := tk.Get(context.Background(), key, f.src); err != nil {
		t.Fatal(err)
	}
	tk.Settle()

	f.redis.Pause() // answers nothing from now on
	defer f.redis.Resume()
	c.Advance(50 * time.Minute) // in the refresh window: the refresh talks to the stuck Redis
	var slowest time.Duration
	for range 2000 {
		start := time.Now()
		if _, err := tk.Get(context.Background(), key, f.src); err != nil {
			t.Fatal(err)
		}
		slowest = max(slowest, time.Since(start))
	}
	// A Get that waited on Redis would take at least the Redis timeout.
	if slowest >= timeout {
		t.Fatalf("slowest L1 hit with Redis stuck: %v (Redis timeout %v)", slowest, timeout)
	}
	// A cold Get waits for Redis at most a few timeouts, then mints locally.
	other := Key{ID: "id-other", Name: "other"}
	start := time.Now()
	if _, err := tk.Get(context.Background(), other, f.src); err != nil {
		t.Fatalf("cold Get with Redis stuck: %v", err)
	}
	if d := time.Since(start); d > 4*timeout {
		t.Fatalf("cold Get with Redis stuck took %v", d)
	}
	tk.Settle()
	t.Logf("slowest of 2000 L1 hits with Redis paused: %v", slowest)
}

func TestRedisHoldsNoSecretsAndWrongKeyIsAMiss(t *testing.T) {
	f := newFleet(t, 1)
	if errs, _ := f.load(10); len(errs) > 0 {
		t.Fatal(errs[0])
	}
	f.settle()
	rc := redis.NewClient(&redis.Options{Addr: f.redis.Addr, DisableIdentity: true})
	defer rc.Close()
	ctx := context.Background()
	keys, err := rc.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 {
		t.Fatalf("keys %q: want one token (lock released)", keys)
	}
	for _, k := range keys {
		v, err := rc.Get(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, clear := range []string{"token-1", key.ID, key.Name} {
			if strings.Contains(k, clear) || strings.Contains(v, clear) {
				t.Fatalf("%q in clear in Redis key %q or its value", clear, k)
			}
		}
	}

	// A replica with another key does not even look under the same name
	// (names are keyed): a miss, so it mints (once).
	other := f.add(t, time.Second, newKey(t))
	tok, err := other.Get(ctx, key, f.src)
	if err != nil || tok.Value != "token-2" {
		t.Fatalf("wrong key: %q %v, want a miss and a new mint", tok.Value, err)
	}
	// A value under the right name that does not open (here: another key's
	// value copied over it) is a miss too, counted as unreadable.
	otherName, _ := f.l2s[1].Names(key.ID)
	fleetName, _ := f.l2s[0].Names(key.ID)
	if otherName == fleetName {
		t.Fatal("replicas with different keys use the same key name")
	}
	foreign, err := rc.Get(ctx, otherName).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Set(ctx, fleetName, foreign, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	fresh := f.add(t, time.Second, f.keys...)
	if tok, err := fresh.Get(ctx, key, f.src); err != nil || tok.Value != "token-3" {
		t.Fatalf("unreadable value: %q %v, want a miss and a new mint", tok.Value, err)
	}
	// Two lookups: before and after taking the lock.
	if n := testutil.ToFloat64(f.l2s[2].opts.Meter.lookups.WithLabelValues(key.Name, "unreadable")); n != 2 {
		t.Fatalf("unreadable lookups = %v, want 2", n)
	}
}

func TestRotationReadsOldValues(t *testing.T) {
	oldKey, newKeyB := newKey(t), newKey(t)
	f := newFleet(t, 1, oldKey)
	if errs, _ := f.load(5); len(errs) > 0 {
		t.Fatal(errs[0])
	}
	f.settle()
	rotated := f.add(t, time.Second, newKeyB, oldKey)
	tok, err := rotated.Get(context.Background(), key, f.src)
	if err != nil || tok.Value != "token-1" || f.src.calls.Load() != 1 {
		t.Fatalf("rotated replica: %q %v mints %d, want the old-key token from Redis", tok.Value, err, f.src.calls.Load())
	}
}

func TestLockReleaseOnlyFreesOwnLock(t *testing.T) {
	c := newClock()
	r := testpeer.StartRedis(t)
	k := newKey(t) // one fleet, one key: the lock's name depends on it
	a, b := newShared(t, r, c, time.Second, k), newShared(t, r, c, time.Second, k)
	ctx := context.Background()
	release, held, err := a.Lock(ctx, key)
	if err != nil || !held {
		t.Fatalf("first lock: %v %v", held, err)
	}
	if _, held, err := b.Lock(ctx, key); err != nil || held {
		t.Fatalf("second lock while held: %v %v", held, err)
	}
	// The lock expired and b took it: a's late release must not free b's lock.
	rc := redis.NewClient(&redis.Options{Addr: r.Addr, DisableIdentity: true})
	defer rc.Close()
	_, lockName := a.Names(key.ID)
	rc.Del(ctx, lockName)
	releaseB, held, err := b.Lock(ctx, key)
	if err != nil || !held {
		t.Fatalf("b lock: %v %v", held, err)
	}
	release()
	if n, _ := rc.Exists(ctx, lockName).Result(); n != 1 {
		t.Fatal("a released b's lock")
	}
	releaseB()
	if n, _ := rc.Exists(ctx, lockName).Result(); n != 0 {
		t.Fatal("b's release left the lock")
	}
}

// TestRedisRefusingStillServes: Redis answers, but with errors (auth, OOM,
// READONLY). Every Get succeeds through a local mint, and the errors are
// counted.
func TestRedisRefusingStillServes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup []any // one command run against the fresh Redis
	}{
		{"auth error", []any{"CONFIG", "SET", "requirepass", "not-the-fleet-password"}},
		{"OOM", []any{"CONFIG", "SET", "maxmemory", "1"}},
		{"READONLY replica", []any{"REPLICAOF", "127.0.0.1", "1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFleet(t, 2)
			rc := redis.NewClient(&redis.Options{Addr: f.redis.Addr, DisableIdentity: true})
			defer rc.Close()
			if err := rc.Do(context.Background(), tc.setup...).Err(); err != nil {
				t.Fatal(err)
			}
			errs, values := f.load(200)
			if len(errs) > 0 {
				t.Fatalf("%d Gets failed, first: %v", len(errs), errs[0])
			}
			// Without a working fleet tier each replica mints for itself.
			if got := f.src.calls.Load(); got < 1 || got > 2 {
				t.Fatalf("mints = %d, want one per replica at most (values %v)", got, values)
			}
			var failures float64
			for _, l2 := range f.l2s {
				m := l2.opts.Meter
				failures += testutil.ToFloat64(m.lookups.WithLabelValues(key.Name, "error")) +
					testutil.ToFloat64(m.locks.WithLabelValues(key.Name, "error")) +
					testutil.ToFloat64(m.writes.WithLabelValues(key.Name, "error"))
			}
			if failures == 0 {
				t.Fatal("Redis refused but no error was counted")
			}
		})
	}
}

// TestBreakerLogsOncePerStateChange: Redis gone for many misses gives one
// log line and one metric increment when the breaker opens, not one per Get;
// after the cool-down a successful probe closes it (one more line).
func TestBreakerLogsOncePerStateChange(t *testing.T) {
	c := newClock()
	r := testpeer.StartRedis(t)
	core, logs := observer.New(zap.DebugLevel)
	meter := NewL2Metrics(nil)
	l2, err := NewRedis(RedisOptions{Addrs: []string{r.Addr}, Sealer: mustSealer(t, newKey(t)), Timeout: time.Second,
		Cooldown: time.Second, Now: c.Now, Logger: zap.New(core), Meter: meter})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	tk, err := New(Options{ExpiryMargin: 30 * time.Second, Now: c.Now, L2: l2, L2Meter: meter})
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	src := &source{clock: c, lifetime: time.Hour}

	r.Kill()
	for range 50 {
		tk.Settle()             // no background refresh may undo the invalidation
		tk.InvalidateLocal(key) // this replica only: each Get misses and asks L2
		if _, err := tk.Get(context.Background(), key, src); err != nil {
			t.Fatal(err)
		}
	}
	opened := logs.FilterMessageSnippet("shared cache unavailable").Len()
	if opened != 1 || testutil.ToFloat64(meter.transitions.WithLabelValues("open")) != 1 || testutil.ToFloat64(meter.state) != 2 {
		t.Fatalf("breaker open: %d log lines, %v transitions, state %v; want 1, 1, 2",
			opened, testutil.ToFloat64(meter.transitions.WithLabelValues("open")), testutil.ToFloat64(meter.state))
	}
	if got := src.calls.Load(); got != 50 {
		t.Fatalf("mints = %d, want 50 local mints", got)
	}

	r.Restart()
	c.Advance(2 * time.Second)
	tk.Settle()
	tk.InvalidateLocal(key)
	if _, err := tk.Get(context.Background(), key, src); err != nil {
		t.Fatal(err)
	}
	if s := testutil.ToFloat64(meter.state); s != 0 {
		t.Fatalf("breaker state %v after Redis came back, want 0 (closed)", s)
	}
	if n := logs.FilterMessage("shared cache breaker state changed").Len(); n != 2 { // open→half-open, half-open→closed
		t.Fatalf("%d state-change lines, want 2", n)
	}
	for _, e := range logs.All() {
		for _, f := range e.Context {
			if strings.Contains(f.String, "token-") {
				t.Fatalf("token in log line %q", e.Message)
			}
		}
	}
}

// TestLockHolderSilentWaiterMintsAfterDeadline: a replica holds the fleet
// lock and never delivers, and its lock outlives the waiter's lock_ttl (a
// replica configured differently, or a lock that never expires). The waiter
// waits no longer than lockPatience of its own lock lifetimes, then mints
// itself and shares the token.
func TestLockHolderSilentWaiterMintsAfterDeadline(t *testing.T) {
	c := newClock()
	r := testpeer.StartRedis(t)
	k := newKey(t)
	newL2 := func(lockTTL time.Duration) *Redis {
		l2, err := NewRedis(RedisOptions{Addrs: []string{r.Addr}, Sealer: mustSealer(t, k), Timeout: time.Second,
			LockTTL: lockTTL, Now: c.Now, Meter: NewL2Metrics(nil)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l2.Close() })
		return l2
	}
	// The silent holder's lock outlives the waiter's patience (its lock TTL).
	dead, l2 := newL2(time.Minute), newL2(300*time.Millisecond)
	if _, held, err := dead.Lock(context.Background(), key); err != nil || !held {
		t.Fatalf("lock: %v %v", held, err)
	}
	tk, err := New(Options{ExpiryMargin: 30 * time.Second, Now: c.Now, L2: l2, L2Meter: l2.opts.Meter})
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	src := &source{clock: c, lifetime: time.Hour}
	start := time.Now()
	tok, err := tk.Get(context.Background(), key, src)
	if err != nil || tok.Value != "token-1" {
		t.Fatalf("Get: %q %v", tok.Value, err)
	}
	if waited := time.Since(start); waited > 3*time.Second {
		t.Fatalf("waited %v for a lock whose TTL is 300ms", waited)
	}
	if n := testutil.ToFloat64(l2.opts.Meter.locks.WithLabelValues(key.Name, "timed_out")); n != 1 {
		t.Fatalf("timed_out = %v, want 1", n)
	}
	if got, ok, err := dead.Load(context.Background(), key); err != nil || !ok || got.Value != "token-1" {
		t.Fatalf("the waiter's token was not shared: %v %v %v", got, ok, err)
	}
}
