package envoy_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
	"github.com/tokenbroker/tokenbroker/devidp"
	"github.com/tokenbroker/tokenbroker/envoy"
	"github.com/tokenbroker/tokenbroker/filter"
)

// maxHitAllocs is the target for a warm Check in process (BENCHMARKS.md).
const maxHitAllocs = 10

// TestCheckHitAllocations guards the hit path's allocation budget, so a
// change that adds allocations fails here rather than only in a benchmark
// nobody reran. The race detector changes allocation counts: skipped there.
func TestCheckHitAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under -race; run without it (make bench reports them too)")
	}
	idp := devidp.New(devidp.Options{Clients: map[string]string{"svc-billing": secret}, Lifetime: time.Hour})
	srv := httptest.NewServer(idp)
	defer srv.Close()
	t.Setenv("BILLING_SECRET", secret)
	cfg, err := config.Parse("allocs.yaml", []byte(strings.ReplaceAll(billingYAML, "IDP", srv.URL)))
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := cache.New(cache.Options{ExpiryMargin: cfg.Cache.ExpiryMargin.D()})
	if err != nil {
		t.Fatal(err)
	}
	defer tokens.Close()
	cc, err := credential.NewClientCredentials(cfg.Credentials["billing"], nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := filter.New(cfg, map[string]credential.Source{"billing": cc}, tokens, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var cur envoy.Current
	cur.Store(f)
	as := envoy.NewAuthorizationServer(&cur)
	req := checkReq("billing.example.com", "/v1/invoices")
	ctx := context.Background()
	if r, _ := as.Check(ctx, req); r.GetStatus().GetCode() != 0 {
		t.Fatal(r)
	}
	tokens.Settle()
	allocs := testing.AllocsPerRun(200, func() { _, _ = as.Check(ctx, req) })
	if allocs > maxHitAllocs {
		t.Fatalf("warm Check allocates %.0f times, budget %d", allocs, maxHitAllocs)
	}
	t.Logf("warm Check: %.0f allocations (budget %d)", allocs, maxHitAllocs)
}
