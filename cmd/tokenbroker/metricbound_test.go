package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/testpeer"
)

// TestMetricCredentialLabelsBounded runs the binary with 1,500 credentials,
// budgets, prices and the Redis tier, gets a token for every one, and scrapes
// /metrics: every family with a credential label has at most
// CredentialSeriesLimit values of its own plus "_other", and all families
// together name the same credentials (one limiter, not one per family).
func TestMetricCredentialLabelsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	const n = cache.CredentialSeriesLimit + 500
	rdb := testpeer.StartRedis(t)
	idp := devidp.New(devidp.Options{Clients: map[string]string{fleetClient: fleetSecret}, Lifetime: time.Hour})
	idpSrv := httptest.NewServer(idp)
	defer idpSrv.Close()
	var b strings.Builder
	b.WriteString("listen:\n  grpc: 127.0.0.1:0\n  admin: 127.0.0.1:0\ncredentials:\n")
	for i := range n {
		// Each credential its own scope, so each has its own identity and mint.
		fmt.Fprintf(&b, "  cred-%d:\n    token_url: %s/oauth/token\n    client_id: %s\n    client_secret: ${FLEET_SECRET}\n    scopes: [s%d]\n    cost_per_mint: 0.001\n    budget: {mints: 1, per: 1h}\n", i, idpSrv.URL, fleetClient, i)
	}
	b.WriteString("routes:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - host: c%d.example.com\n    credential: cred-%d\n", i, i)
	}
	b.WriteString("cache:\n" + fleetRedisBlock(t, rdb.Addr))
	p := startBinary(t, write(t, "tb.yaml", b.String()), "FLEET_SECRET="+fleetSecret)
	client := authv3.NewAuthorizationClient(dial(t, p.grpcAddr))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	jobs := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []string
	for range 8 {
		wg.Go(func() {
			for i := range jobs {
				resp, err := client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
					Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
						Host: fmt.Sprintf("c%d.example.com", i), Path: "/", Method: "GET"}},
				}})
				if err != nil || resp.GetOkResponse() == nil {
					mu.Lock()
					failed = append(failed, fmt.Sprintf("cred-%d: %v %v", i, err, resp.GetDeniedResponse()))
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("%d Checks failed, first: %s", len(failed), failed[0])
	}
	if got := idp.Mints(); got != n {
		t.Fatalf("%d mints, want %d (one per credential)", got, n)
	}

	resp, err := http.Get("http://" + p.adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	// Families that must carry per-credential series in this run: each would
	// have 1,500 label values without the bound.
	want := []string{
		"tokenbroker_cache_lookups_total", "tokenbroker_mints_total", "tokenbroker_mint_duration_seconds",
		"tokenbroker_token_expiry_seconds", "tokenbroker_mints_avoided_total", "tokenbroker_cost_avoided_dollars_total",
		"tokenbroker_cost_spent_dollars_total", "tokenbroker_budget_warnings_total",
		"tokenbroker_l2_lookups_total", "tokenbroker_l2_writes_total", "tokenbroker_l2_lock_total",
	}
	union := map[string]bool{}
	seen := map[string]bool{}
	for name, mf := range mfs {
		values := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "credential" || lp.GetName() == "upstream" {
					values[lp.GetValue()] = true
					union[lp.GetValue()] = true
				}
			}
		}
		if len(values) == 0 {
			continue
		}
		seen[name] = true
		if len(values) > cache.CredentialSeriesLimit+1 {
			t.Errorf("%s: %d credential label values, bound is %d + %q", name, len(values), cache.CredentialSeriesLimit, cache.OtherCredentials)
		}
		if !values[cache.OtherCredentials] {
			t.Errorf("%s: no %q series for the credentials past the bound", name, cache.OtherCredentials)
		}
		t.Logf("%s: %d credential label values", name, len(values))
	}
	for _, name := range want {
		if !seen[name] {
			t.Errorf("%s: no per-credential series at all (the test no longer covers it)", name)
		}
	}
	if len(union) > cache.CredentialSeriesLimit+1 {
		var odd []string
		for v := range union {
			if !strings.HasPrefix(v, "cred-") {
				odd = append(odd, v)
			}
		}
		t.Errorf("all families together use %d credential label values: the families do not share one limiter (besides cred-N: %q)", len(union), odd)
	}
	if g := mfs["tokenbroker_metric_credentials"]; g == nil || g.GetMetric()[0].GetGauge().GetValue() != cache.CredentialSeriesLimit {
		t.Errorf("tokenbroker_metric_credentials = %v, want %d", g, cache.CredentialSeriesLimit)
	}
}
