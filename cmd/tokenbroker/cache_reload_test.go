package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/internal/testpeer"
)

// checkLoad is a bounded load of Checks for host on l's gRPC listener.
func checkLoad(t *testing.T, l *live, host string) *load {
	g := &grpcChecks{t: t}
	return startLoad(t, 4, 3000, l.srv.grpc.addr().String(), func(a string) error { return g.check(a, host) })
}

// TestReloadCacheSettingsUnderLoad changes max_tokens, expiry_margin and
// refresh_ahead while Checks run: none fails, nothing is minted again (a
// new size rebuilds L1 from the slots), and the new settings are the ones in
// force — down to the next decision, which a margin as long as the token's
// lifetime refuses.
func TestReloadCacheSettingsUnderLoad(t *testing.T) {
	idp, url := newIdP(t)
	base := tbConfig(url, []string{"a"}, "a.example.com=a")
	path := write(t, "tb.yaml", base)
	l := startLive(t, path, idp, url)
	if got := outcome(l.check(t, "a.example.com/")); got != "ok" {
		t.Fatal(got)
	}
	ld := checkLoad(t, l, "a.example.com")
	for _, s := range []cache.Settings{
		{MaxTokens: 10, ExpiryMargin: 30 * time.Second, RefreshAhead: 0.2},
		{MaxTokens: 10, ExpiryMargin: 45 * time.Second, RefreshAhead: 0.5},
		{MaxTokens: 200000, ExpiryMargin: 20 * time.Second, RefreshAhead: 0.3},
		{MaxTokens: 100000, ExpiryMargin: 30 * time.Second, RefreshAhead: 0.2},
	} {
		ld.await(30)
		replaceFile(t, path, base+fmt.Sprintf("cache:\n  max_tokens: %d\n  expiry_margin: %s\n  refresh_ahead: %g\n", s.MaxTokens, s.ExpiryMargin, s.RefreshAhead))
		if r, err := l.srv.reload(path, "test"); r != reloadApplied || err != nil {
			t.Fatalf("reload to %+v: %s %v", s, r, err)
		}
		if got := l.srv.tokens.Settings(); got != s {
			t.Fatalf("cache settings in force %+v, want %+v", got, s)
		}
	}
	ld.await(30)
	ld.requireNoFailures("cache settings changed 4 times")
	if n := idp.MintsFor("svc-a"); n != 1 {
		t.Fatalf("svc-a minted %d times across the cache changes, want 1", n)
	}

	// The next decision uses the new margin: one as long as the token's
	// lifetime leaves no token that may be handed out. (default_lifetime must
	// exceed the margin; it is not used, the IdP sends expires_in.)
	long := strings.Replace(base, "    client_id: svc-a\n", "    client_id: svc-a\n    default_lifetime: 2h\n", 1)
	replaceFile(t, path, long+"cache:\n  expiry_margin: 1h\n")
	if r, err := l.srv.reload(path, "test"); r != reloadApplied || err != nil {
		t.Fatalf("reload: %s %v", r, err)
	}
	if got := outcome(l.check(t, "a.example.com/")); got == "ok" {
		t.Fatal("a token inside the new expiry_margin was handed out")
	}
}

func redisKeys(t *testing.T, addr, pattern string) []string {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true})
	defer rc.Close()
	keys, err := rc.Keys(context.Background(), pattern).Result()
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// TestReloadRedisUnderLoad moves cache.redis to another Redis while Checks
// run: none fails, the warm token is not minted again, the new client is
// the one tokens are shared through, and the old client is closed.
func TestReloadRedisUnderLoad(t *testing.T) {
	a, b := testpeer.StartRedis(t), testpeer.StartRedis(t)
	idp, url := newIdP(t)
	body := func(rdb *testpeer.Redis, creds []string, routes ...string) string {
		return tbConfig(url, creds, routes...) + "cache:\n" + fleetRedisBlock(t, rdb.Addr)
	}
	path := write(t, "tb.yaml", body(a, []string{"a"}, "a.example.com=a"))
	l := startLive(t, path, idp, url)
	if got := outcome(l.check(t, "a.example.com/")); got != "ok" {
		t.Fatal(got)
	}
	if n := len(redisKeys(t, a.Addr, "fleet-test:token:*")); n != 1 {
		t.Fatalf("%d tokens in the first Redis, want 1", n)
	}
	old := l.srv.fleet.cur.Load()

	ld := checkLoad(t, l, "a.example.com")
	ld.await(50)
	replaceFile(t, path, body(b, []string{"a", "c"}, "a.example.com=a", "c.example.com=c"))
	if r, err := l.srv.reload(path, "test"); r != reloadApplied || err != nil {
		t.Fatalf("reload: %s %v\n%s", r, err, l.logs)
	}
	ld.await(50)
	ld.requireNoFailures("cache.redis moved")
	if n := idp.MintsFor("svc-a"); n != 1 {
		t.Fatalf("svc-a minted %d times across the move, want 1", n)
	}
	if err := old.Ping(context.Background()); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("the old Redis client still works after the move: %v", err)
	}
	// A new token is shared through the new Redis only.
	if got := outcome(l.check(t, "c.example.com/")); got != "ok" {
		t.Fatal(got)
	}
	if n := len(redisKeys(t, b.Addr, "fleet-test:token:*")); n != 1 {
		t.Fatalf("%d tokens in the new Redis, want 1 (credential c's)", n)
	}
	if n := len(redisKeys(t, a.Addr, "fleet-test:token:*")); n != 1 {
		t.Fatalf("%d tokens in the old Redis, want still 1", n)
	}

	// cache.redis removed: the cache works on in this process alone.
	replaceFile(t, path, tbConfig(url, []string{"a", "c"}, "a.example.com=a", "c.example.com=c"))
	if r, err := l.srv.reload(path, "test"); r != reloadApplied || err != nil {
		t.Fatalf("reload without redis: %s %v", r, err)
	}
	if l.srv.fleet.cur.Load() != nil {
		t.Fatal("a Redis client is still in use without cache.redis")
	}
	if got := outcome(l.check(t, "a.example.com/")); got != "ok" {
		t.Fatal(got)
	}
	if n := idp.MintsFor("svc-a"); n != 1 {
		t.Fatalf("svc-a minted %d times, want 1", n)
	}
}

// TestReloadRedisBreakerStartsFresh: a Redis that died opened the breaker;
// the client for the new cache.redis starts with a closed one and is used
// at once.
func TestReloadRedisBreakerStartsFresh(t *testing.T) {
	a, b := testpeer.StartRedis(t), testpeer.StartRedis(t)
	idp, url := newIdP(t)
	body := func(rdb *testpeer.Redis) string {
		return tbConfig(url, []string{"a", "c"}, "a.example.com=a", "c.example.com=c") + "cache:\n" + fleetRedisBlock(t, rdb.Addr)
	}
	path := write(t, "tb.yaml", body(a))
	l := startLive(t, path, idp, url)
	if got := outcome(l.check(t, "a.example.com/")); got != "ok" {
		t.Fatal(got)
	}
	a.Kill()
	key, _ := l.srv.decisions.filter.Key("a")
	for i := 0; !strings.Contains(l.metrics(t), "tokenbroker_l2_breaker_state 2"); i++ {
		if i == 20 {
			t.Fatalf("breaker not open after %d failing mints:\n%s", i, grep(l.metrics(t), "l2_"))
		}
		l.srv.tokens.Invalidate(key) // each mint now fails a Redis lookup and a budget count
		if got := outcome(l.check(t, "a.example.com/")); got != "ok" {
			t.Fatal(got)
		}
	}
	replaceFile(t, path, body(b))
	if r, err := l.srv.reload(path, "test"); r != reloadApplied || err != nil {
		t.Fatalf("reload: %s %v", r, err)
	}
	if m := l.metrics(t); !strings.Contains(m, "tokenbroker_l2_breaker_state 0") {
		t.Fatalf("breaker state after the move:\n%s", grep(m, "breaker"))
	}
	if got := outcome(l.check(t, "c.example.com/")); got != "ok" {
		t.Fatal(got)
	}
	if n := len(redisKeys(t, b.Addr, "fleet-test:token:*")); n != 1 {
		t.Fatalf("%d tokens in the new Redis, want 1: the fresh client was not used", n)
	}
}
