package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/internal/testpeer"
)

// Two APIs keyed by inline static values: each must get its own key.
const (
	mapsKey    = "maps-api-key-5d1c9e"
	weatherKey = "weather-api-key-83b0aa"
)

// staticConfig is a configuration with two inline static credentials, maps
// and weather, with the given values, each routed by its host; extra is
// appended (listeners, a cache block).
func staticConfig(maps, weather, extra string) string {
	return `
listen:
  grpc: 127.0.0.1:0
  admin: 127.0.0.1:0
  http: 127.0.0.1:0
credentials:
  maps:
    type: static
    value: ` + maps + `
    header: x-api-key
    format: "{token}"
  weather:
    type: static
    value: ` + weather + `
    header: x-api-key
    format: "{token}"
routes:
  - host: maps.example.com
    credential: maps
  - host: weather.example.com
    credential: weather
` + extra
}

// grpcKey asks p over gRPC for host's x-api-key.
func grpcKey(t *testing.T, c authv3.AuthorizationClient, host string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Host: host, Path: "/v1/tiles", Method: "GET"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	hs := r.GetOkResponse().GetHeaders()
	if len(hs) != 1 || hs[0].GetHeader().GetKey() != "x-api-key" {
		t.Fatalf("Check %s: %v", host, r)
	}
	return hs[0].GetHeader().GetValue()
}

// forwardAuthKey asks p's forward-auth listener for host's x-api-key.
func forwardAuthKey(t *testing.T, p *process, host string) string {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+p.httpAddr+"/auth", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	req.Header.Set("X-Original-URI", "/v1/tiles")
	req.Header.Set("X-Original-Method", "GET")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("forward-auth %s: %d %v", host, resp.StatusCode, resp.Header)
	}
	return resp.Header.Get("X-Api-Key")
}

func assertNoStaticValueInLogs(t *testing.T, p *process, values ...string) {
	t.Helper()
	for _, v := range values {
		if strings.Contains(p.logText(), v) {
			t.Fatalf("a static value reached the logs:\n%s", p.logText())
		}
	}
}

// TestStaticValuesKeepTheirOwnIdentity: two inline static credentials are
// two tokens, on gRPC and on forward-auth, whichever is asked for first.
func TestStaticValuesKeepTheirOwnIdentity(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	for _, first := range []string{"maps.example.com", "weather.example.com"} {
		t.Run("first="+first, func(t *testing.T) {
			p := startBinary(t, write(t, "tb.yaml", staticConfig(mapsKey, weatherKey, "")))
			c := authv3.NewAuthorizationClient(dial(t, p.grpcAddr))
			want := map[string]string{"maps.example.com": mapsKey, "weather.example.com": weatherKey}
			second := "weather.example.com"
			if first == second {
				second = "maps.example.com"
			}
			// gRPC in one order, forward-auth in the other, then again: every
			// answer comes from the one shared cache.
			for range 2 {
				for _, h := range []string{first, second} {
					if got := grpcKey(t, c, h); got != want[h] {
						t.Fatalf("gRPC %s got %q, want %q", h, got, want[h])
					}
				}
				for _, h := range []string{second, first} {
					if got := forwardAuthKey(t, p, h); got != want[h] {
						t.Fatalf("forward-auth %s got %q, want %q", h, got, want[h])
					}
				}
			}
			assertNoStaticValueInLogs(t, p, mapsKey, weatherKey)
		})
	}
}

// TestStaticValuesAcrossAFleet: two real processes share a real Redis.
// Each replica serves each API its own key, and no static value (sealed or
// not) is stored in Redis: static tokens stay out of the shared tier.
func TestStaticValuesAcrossAFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	rdb := testpeer.StartRedis(t)
	cfg := write(t, "tb.yaml", staticConfig(mapsKey, weatherKey, "cache:\n"+fleetRedisBlock(t, rdb.Addr)))
	a, b := startBinary(t, cfg), startBinary(t, cfg)
	ca, cb := authv3.NewAuthorizationClient(dial(t, a.grpcAddr)), authv3.NewAuthorizationClient(dial(t, b.grpcAddr))
	// Replica a fills its cache with maps first, b with weather first: with a
	// shared identity, each would then hand the other's key to the other API.
	steps := []struct {
		c    authv3.AuthorizationClient
		host string
		want string
	}{
		{ca, "maps.example.com", mapsKey},
		{cb, "weather.example.com", weatherKey},
		{cb, "maps.example.com", mapsKey},
		{ca, "weather.example.com", weatherKey},
	}
	for i, s := range steps {
		if got := grpcKey(t, s.c, s.host); got != s.want {
			t.Fatalf("step %d: %s got %q, want %q", i, s.host, got, s.want)
		}
	}
	for _, p := range []*process{a, b} {
		for h, want := range map[string]string{"maps.example.com": mapsKey, "weather.example.com": weatherKey} {
			if got := forwardAuthKey(t, p, h); got != want {
				t.Fatalf("forward-auth %s got %q, want %q", h, got, want)
			}
		}
	}
	rc := redis.NewClient(&redis.Options{Addr: rdb.Addr, DisableIdentity: true})
	defer rc.Close()
	keys, err := rc.Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	// Tokens and mint locks are strings; the mint counts of budgets are
	// sorted sets of instants, which say nothing about a value.
	for _, k := range keys {
		if typ := rc.Type(context.Background(), k).Val(); typ != "zset" {
			t.Fatalf("static credentials left a %s key %q in Redis: a token or a mint lock", typ, k)
		}
		members, err := rc.ZRange(context.Background(), k, 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range []string{mapsKey, weatherKey} {
			if strings.Contains(k, v) || strings.Contains(strings.Join(members, " "), v) {
				t.Fatalf("a static value is readable in Redis key %q", k)
			}
		}
	}
	assertNoStaticValueInLogs(t, a, mapsKey, weatherKey)
	assertNoStaticValueInLogs(t, b, mapsKey, weatherKey)
}

// TestStaticValueChangeAppliesOnNextRequest: a reload that changes an inline
// value serves the new value on the next request, on both listeners, and
// leaves the unchanged credential alone.
func TestStaticValueChangeAppliesOnNextRequest(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	const rotated = "maps-api-key-rotated-0f77"
	path := write(t, "tb.yaml", staticConfig(mapsKey, weatherKey, ""))
	p := startBinary(t, path)
	c := authv3.NewAuthorizationClient(dial(t, p.grpcAddr))
	if got := grpcKey(t, c, "maps.example.com"); got != mapsKey {
		t.Fatalf("before the reload: %q", got)
	}
	if got := forwardAuthKey(t, p, "maps.example.com"); got != mapsKey {
		t.Fatalf("before the reload: %q", got)
	}

	replaceFile(t, path, staticConfig(rotated, weatherKey, ""))
	waitLog(t, p, "configuration reloaded", "file")
	if got := grpcKey(t, c, "maps.example.com"); got != rotated {
		t.Fatalf("gRPC after the reload got %q, want the new value", got)
	}
	if got := forwardAuthKey(t, p, "maps.example.com"); got != rotated {
		t.Fatalf("forward-auth after the reload got %q, want the new value", got)
	}
	if got := grpcKey(t, c, "weather.example.com"); got != weatherKey {
		t.Fatalf("unchanged weather after the reload: %q", got)
	}
	assertNoStaticValueInLogs(t, p, mapsKey, weatherKey, rotated)
}
