package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/testpeer"
)

const (
	fleetClient = "svc-fleet-client-7731"
	fleetSecret = "fleet-secret-value-5519"
)

// replicaSet is n tokenbroker processes built from this command, sharing
// one dev IdP (and one Redis when configured).
type replicaSet struct {
	procs   []*process
	clients []authv3.AuthorizationClient
}

func startReplicas(t *testing.T, n int, idpURL, redisBlock string) *replicaSet {
	t.Helper()
	return startFleet(t, n, idpURL, "  expiry_margin: 1s\n  refresh_ahead: 0.5\n"+redisBlock)
}

// checks runs n concurrent Checks spread over the replicas and returns the
// number that failed and the header values injected, per replica.
func (rs *replicaSet) checks(ctx context.Context, n int) (failed int, seen []map[string]int) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen = make([]map[string]int, len(rs.clients))
	for i := range seen {
		seen[i] = map[string]int{}
	}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Host: "api.example.com", Path: "/", Method: "GET"}},
	}}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := i % len(rs.clients)
			resp, err := rs.clients[r].Check(ctx, req)
			mu.Lock()
			defer mu.Unlock()
			if err != nil || resp.GetOkResponse() == nil || len(resp.GetOkResponse().GetHeaders()) != 1 {
				failed++
				return
			}
			seen[r][resp.GetOkResponse().GetHeaders()[0].GetHeader().GetValue()]++
		}()
	}
	wg.Wait()
	return failed, seen
}

func fleetRedisBlock(t *testing.T, addr string) string {
	t.Helper()
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	keys := write(t, "keys", base64.StdEncoding.EncodeToString(k)+"\n")
	return fmt.Sprintf("  redis:\n    addrs: [%s]\n    key_prefix: \"fleet-test:\"\n    encryption_keys_file: %s\n    timeout: 500ms\n", addr, keys)
}

// TestFleetProcessesMintOnce runs real tokenbroker processes against the dev
// IdP: without Redis every replica mints; with Redis the fleet mints once,
// and once more across a refresh.
func TestFleetProcessesMintOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	rdb := testpeer.StartRedis(t)
	for _, tc := range []struct {
		replicas  int
		redis     bool
		checks    int
		wantMints int64
	}{
		{1, false, 300, 1},
		{3, false, 3000, 3},
		{1, true, 300, 1},
		{3, true, 3000, 1},
	} {
		t.Run(fmt.Sprintf("replicas=%d,redis=%v", tc.replicas, tc.redis), func(t *testing.T) {
			idp := devidp.New(devidp.Options{Clients: map[string]string{fleetClient: fleetSecret}, Lifetime: time.Hour})
			idpSrv := httptest.NewServer(idp)
			defer idpSrv.Close()
			block := ""
			if tc.redis {
				block = fleetRedisBlock(t, rdb.Addr)
				flushRedis(t, rdb.Addr)
			}
			rs := startReplicas(t, tc.replicas, idpSrv.URL, block)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			failed, _ := rs.checks(ctx, tc.checks)
			if failed != 0 {
				t.Fatalf("%d of %d Checks failed", failed, tc.checks)
			}
			if got := idp.Mints(); got != tc.wantMints {
				t.Fatalf("%d cold Checks over %d replicas (redis %v): %d mints, want %d", tc.checks, tc.replicas, tc.redis, got, tc.wantMints)
			}
			t.Logf("%d replicas, redis=%v: %d cold Checks -> %d mints", tc.replicas, tc.redis, tc.checks, idp.Mints())
		})
	}
}

// TestFleetProcessesRefreshOnceAndKeepRedisClean: three processes share a
// short-lived token; across its refresh the fleet mints exactly once more,
// and Redis then holds no token, secret or client id in clear.
func TestFleetProcessesRefreshOnceAndKeepRedisClean(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	rdb := testpeer.StartRedis(t)
	// 12s tokens, 1s margin, refresh_ahead 0.5: refresh from 5.5s after minting.
	idp := devidp.New(devidp.Options{Clients: map[string]string{fleetClient: fleetSecret}, Lifetime: 12 * time.Second})
	idpSrv := httptest.NewServer(idp)
	defer idpSrv.Close()
	rs := startReplicas(t, 3, idpSrv.URL, fleetRedisBlock(t, rdb.Addr))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	failed, seen := rs.checks(ctx, 3000)
	if failed != 0 || idp.Mints() != 1 {
		t.Fatalf("cold: %d failed, %d mints, want 0 and 1", failed, idp.Mints())
	}
	var first string
	for v := range seen[0] {
		first = v
	}
	idp.SetLifetime(time.Hour) // the refreshed token lives long: no second refresh in this test

	// Keep a steady load until every replica injects the refreshed token.
	tick := time.NewTicker(50 * time.Millisecond) // load pacing, not synchronisation
	defer tick.Stop()
	deadline := time.Now().Add(30 * time.Second)
	var total, failedTotal int
	for {
		failed, seen := rs.checks(ctx, 30)
		total += 30
		failedTotal += failed
		refreshed := 0
		for _, s := range seen {
			if len(s) == 1 && s[first] == 0 {
				refreshed++
			}
		}
		if refreshed == len(seen) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not every replica refreshed within 30s: %v", seen)
		}
		<-tick.C
	}
	if failedTotal != 0 {
		t.Fatalf("%d of %d Checks failed across the refresh", failedTotal, total)
	}
	if got := idp.Mints(); got != 2 {
		t.Fatalf("across a refresh: %d mints in total, want 2", got)
	}

	// Redis contents: nothing readable.
	rc := redis.NewClient(&redis.Options{Addr: rdb.Addr, DisableIdentity: true})
	defer rc.Close()
	keys, err := rc.Keys(ctx, "*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("keys %v %v", keys, err)
	}
	forbidden := []string{fleetClient, fleetSecret, "fleet-test:fleet", strings.TrimPrefix(first, "Bearer ")}
	for _, s := range seen {
		for v := range s {
			forbidden = append(forbidden, strings.TrimPrefix(v, "Bearer "))
		}
	}
	for _, k := range keys {
		// Tokens and locks are strings; the fleet's mint counts (budgets) are sorted sets.
		var v string
		switch typ := rc.Type(ctx, k).Val(); typ {
		case "string":
			v, err = rc.Get(ctx, k).Result()
		case "zset":
			var members []string
			members, err = rc.ZRange(ctx, k, 0, -1).Result()
			v = strings.Join(members, " ")
		default:
			t.Fatalf("unexpected %s key %q", typ, k)
		}
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		for _, f := range forbidden {
			if strings.Contains(k, f) || strings.Contains(v, f) {
				t.Fatalf("%q readable in Redis key %q or its value", f, k)
			}
		}
	}
	// The metrics tell the same story, and leak nothing either. Which
	// replica took or waited on the lock depends on scheduling, so read
	// every replica's metrics together.
	var body []byte
	for _, p := range rs.procs {
		resp, err := http.Get("http://" + p.adminAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = append(body, b...)
	}
	for _, want := range []string{`tokenbroker_l2_lookups_total{credential="fleet"`, `tokenbroker_l2_lock_total{credential="fleet"`, "tokenbroker_l2_breaker_state 0"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, p := range rs.procs {
		for _, f := range forbidden {
			if strings.Contains(p.logText(), f) || strings.Contains(string(body), f) {
				t.Fatalf("%q in logs or metrics", f)
			}
		}
	}
	t.Logf("3 processes with Redis: 3000 cold Checks -> 1 mint; %d Checks across the refresh -> 1 more", total)
}

func flushRedis(t *testing.T, addr string) {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true})
	defer rc.Close()
	if err := rc.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}

// TestFleetProcessesSurviveRedisFailure: under a steady load of Checks on
// warm replicas, Redis is frozen (SIGSTOP) and then killed. No Check fails,
// warm Checks never wait on Redis, and replicas started meanwhile serve by
// minting locally.
func TestFleetProcessesSurviveRedisFailure(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	const redisTimeout = 500 * time.Millisecond // fleetRedisBlock's timeout
	rdb := testpeer.StartRedis(t)
	idp := devidp.New(devidp.Options{Clients: map[string]string{fleetClient: fleetSecret}, Lifetime: time.Hour})
	idpSrv := httptest.NewServer(idp)
	defer idpSrv.Close()
	block := fleetRedisBlock(t, rdb.Addr)
	warm := startReplicas(t, 2, idpSrv.URL, block)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if failed, _ := warm.checks(ctx, 300); failed != 0 || idp.Mints() != 1 {
		t.Fatalf("warm-up: %d failed, %d mints", failed, idp.Mints())
	}
	// Two more replicas, started now (process start-up is CPU-heavy and
	// would blur the latencies) but sent no Check until Redis is in trouble.
	late := []*replicaSet{startReplicas(t, 1, idpSrv.URL, block), startReplicas(t, 1, idpSrv.URL, block)}

	stop := make(chan struct{})
	loadDone := make(chan struct{})
	var failed, total int
	var slowest time.Duration
	go func() {
		defer close(loadDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			f, _ := warm.checks(ctx, 20)
			slowest = max(slowest, time.Since(start))
			failed += f
			total += 20
		}
	}()

	cold := func(rs *replicaSet, what string) {
		t.Helper()
		start := time.Now()
		if f, _ := rs.checks(ctx, 1); f != 0 {
			t.Fatalf("cold Check with Redis %s failed:\n%s", what, rs.procs[0].logText())
		}
		if d := time.Since(start); d > 4*redisTimeout {
			t.Errorf("cold Check with Redis %s took %v", what, d)
		}
	}
	rdb.Pause()
	cold(late[0], "frozen")
	rdb.Kill()
	cold(late[1], "killed")
	close(stop)
	<-loadDone

	if failed != 0 {
		t.Fatalf("%d of %d Checks failed while Redis froze and died", failed, total)
	}
	if slowest >= redisTimeout {
		t.Fatalf("a round of warm Checks took %v: it waited on Redis (timeout %v)", slowest, redisTimeout)
	}
	if got := idp.Mints(); got != 3 {
		t.Fatalf("mints = %d, want 3 (the fleet's one, then one local mint per replica started without Redis)", got)
	}
	t.Logf("%d warm Checks, 0 failed, slowest round of 20 %v, with Redis frozen then killed", total, slowest)
}
