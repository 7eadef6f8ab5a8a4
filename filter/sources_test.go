package filter

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
)

func TestSourcePolicy(t *testing.T) {
	p := newSourcePolicy([]string{
		"spiffe://cluster.local/ns/payments/sa/*",
		"spiffe://cluster.local/ns/batch/sa/reporter",
		"spiffe://*/ns/shared/sa/api",
		"10.1.0.0/16",
		"192.168.7.9",
		"fd00::/8",
	})
	for _, tc := range []struct {
		principal, address string
		want               bool
	}{
		{"spiffe://cluster.local/ns/payments/sa/checkout", "", true},
		{"spiffe://cluster.local/ns/payments/sa/", "", false},              // * needs a segment
		{"spiffe://cluster.local/ns/payments/sa/checkout/x", "", false},    // one segment only
		{"spiffe://cluster.local/ns/payments/sa", "", false},               // too short
		{"spiffe://cluster.local/ns/payments-evil/sa/checkout", "", false}, // no prefix matching
		{"spiffe://cluster.local/ns/batch/sa/reporter", "", true},
		{"spiffe://cluster.local/ns/batch/sa/reporter2", "", false},
		{"spiffe://other.domain/ns/shared/sa/api", "", true},
		{"SPIFFE://cluster.local/ns/batch/sa/reporter", "", false}, // exact, case-sensitive
		{"", "10.1.200.3", true},
		{"", "10.2.0.1", false},
		{"", "192.168.7.9", true},
		{"", "::ffff:192.168.7.9", true}, // IPv4-mapped
		{"", "192.168.7.10", false},
		{"", "fd12::1", true},
		{"", "not-an-ip", false},
		{"", "", false},
		{"spiffe://cluster.local/ns/web/sa/frontend", "10.9.9.9", false},
		{"spiffe://cluster.local/ns/web/sa/frontend", "10.1.0.1", true}, // address alone suffices
	} {
		if got := p.allows(tc.principal, tc.address); got != tc.want {
			t.Errorf("allows(%q, %q) = %v, want %v", tc.principal, tc.address, got, tc.want)
		}
	}
	var open *sourcePolicy = newSourcePolicy(nil)
	if !open.allows("", "") || !open.allows("spiffe://x/y", "1.2.3.4") {
		t.Error("an empty allowed_sources must allow everyone")
	}
}

func TestDecideSourceNotAllowedIsCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := sourceFilter(t, nil, NewMetrics(reg))
	d := f.Decide(context.Background(), &Request{Host: "a.example.com", Principal: "spiffe://td/ns/b/sa/x", SourceAddress: "10.0.0.1"})
	if d.Allowed || d.Status != 403 || d.Reason != "source not allowed" || d.Header.Value != "" {
		t.Fatalf("decision %+v", d)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP tokenbroker_credential_checks_total Authorization checks by credential and result: allowed, source_not_allowed, token_unavailable, budget. Credentials past the series limit share credential="_other".
# TYPE tokenbroker_credential_checks_total counter
tokenbroker_credential_checks_total{credential="k",result="source_not_allowed"} 1
`), "tokenbroker_credential_checks_total"); err != nil {
		t.Fatalf("source_not_allowed not counted for the credential: %v", err)
	}
	if d := f.Decide(context.Background(), &Request{Host: "a.example.com", Principal: "spiffe://td/ns/a/sa/x"}); !d.Allowed || d.Header.Value != "Bearer the-key" {
		t.Fatalf("allowed principal: %+v", d)
	}
}

// TestSourceDenialsLogBounded: refused callers cause at most one log line
// per credential per interval, carrying the count, with their (huge)
// principal clipped.
func TestSourceDenialsLogBounded(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	f := sourceFilter(t, zap.New(core), nil)
	huge := "spiffe://td/ns/b/sa/" + strings.Repeat("x", 1<<20)
	for range 1000 {
		if d := f.Decide(context.Background(), &Request{Host: "a.example.com", Principal: huge}); d.Allowed {
			t.Fatal("allowed")
		}
	}
	lines := logs.FilterMessage("source not allowed to use credential").All()
	if len(lines) != 1 {
		t.Fatalf("%d log lines for 1,000 denials in one interval, want 1", len(lines))
	}
	if p := lines[0].ContextMap()["principal"].(string); len(p) > maxDenialField {
		t.Fatalf("logged principal of %d bytes, want at most %d", len(p), maxDenialField)
	}
}

// sourceFilter is a filter with one static credential k for a.example.com
// that only spiffe://td/ns/a/sa/* may use.
func sourceFilter(t *testing.T, log *zap.Logger, m *Metrics) *Filter {
	t.Helper()
	cfg, err := config.Parse("t.yaml", []byte(`credentials:
  k:
    type: static
    value: the-key
    allowed_sources: ['spiffe://td/ns/a/sa/*']
routes:
  - {host: a.example.com, credential: k}
`))
	if err != nil {
		t.Fatal(err)
	}
	src, err := credential.NewStatic(cfg.Credentials["k"])
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := cache.New(cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tokens.Close)
	f, err := New(cfg, map[string]credential.Source{"k": src}, tokens, log, m)
	if err != nil {
		t.Fatal(err)
	}
	return f
}
