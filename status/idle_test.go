package status

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/budget"
	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/filter"
)

// idle is a page over n credentials, each with a cached token, wired to one
// registry as the binary wires it (cache metrics, filter decisions, the cost
// meter), and then left alone: no Check, no mint.
type idle struct {
	page *Page
	reg  *prometheus.Registry
	clk  *clock
}

func newIdle(tb testing.TB, n int) *idle {
	tb.Helper()
	clk := &clock{t: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	reg := prometheus.NewRegistry()
	tokens, err := cache.New(cache.Options{Now: clk.now, Meter: cache.NewMetrics(reg), MaxTokens: int64(2 * n)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(tokens.Close)
	creds := make(map[string]*config.Credential, n)
	ctx := context.Background()
	for i := range n {
		name := fmt.Sprintf("cred-%06d", i)
		cr := &config.Credential{Type: "client_credentials", TokenURL: "https://idp.example/token", ClientID: name, CostPerMint: 0.001}
		creds[name] = cr
		if _, err := tokens.Get(ctx, cache.Key{ID: cr.Identity(), Name: name}, src{clk: clk}); err != nil {
			tb.Fatal(err)
		}
	}
	tokens.Settle()
	p := New(tokens, nil, budget.NewMeter(nil, clk.now, nil, nil), creds)
	p.SetDecisions(filter.NewMetrics(reg))
	if err := reg.Register(NewCollector(p)); err != nil {
		tb.Fatal(err)
	}
	return &idle{page: p, reg: reg, clk: clk}
}

// tick is what an idle tokenbroker does on its own: one chart sample (every
// 10 s) and one Prometheus scrape of every family.
func (s *idle) tick(tb testing.TB) {
	s.clk.add(10 * time.Second)
	s.page.Sample()
	if _, err := s.reg.Gather(); err != nil {
		tb.Fatal(err)
	}
}

// TestIdleTickFlat: the periodic work of an idle tokenbroker (the status
// sampler, a metrics scrape) allocates the same with 100k cached credentials
// as with 1k. Both sizes fill the credential series limit, so what is left
// to differ is anything proportional to the credentials.
func TestIdleTickFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("caches 100k tokens")
	}
	allocs := map[int]float64{}
	views := map[int]float64{}
	for _, n := range []int{cache.CredentialSeriesLimit, 100 * cache.CredentialSeriesLimit} {
		s := newIdle(t, n)
		s.tick(t) // the first scrape labels and walks once
		allocs[n] = testing.AllocsPerRun(5, func() { s.tick(t) })
		views[n] = testing.AllocsPerRun(3, func() {
			if d := s.page.DataPage(2); len(d.Rows) != MaxRows || d.RowsTotal != n {
				t.Fatalf("page 2: %d rows of %d, want %d of %d", len(d.Rows), d.RowsTotal, MaxRows, n)
			}
		})
		t.Logf("n=%d: %.0f allocs per idle tick, %.0f per status view", n, allocs[n], views[n])
	}
	small, big := allocs[cache.CredentialSeriesLimit], allocs[100*cache.CredentialSeriesLimit]
	// A little headroom for the one extra "_other" series.
	if big > small*1.1+50 {
		t.Errorf("idle tick: %.0f allocs with 100k credentials, %.0f with 1k: grows with the credentials", big, small)
	}
	if vs, vb := views[cache.CredentialSeriesLimit], views[100*cache.CredentialSeriesLimit]; vb > vs*1.1+50 {
		t.Errorf("status view: %.0f allocs with 100k credentials, %.0f with 1k: grows with the credentials", vb, vs)
	}
}

// BenchmarkIdleTick is one sample and one scrape of an idle tokenbroker.
func BenchmarkIdleTick(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("credentials=%d", n), func(b *testing.B) {
			s := newIdle(b, n)
			s.tick(b)
			b.ReportAllocs()
			for b.Loop() {
				s.tick(b)
			}
		})
	}
}

// BenchmarkStatusView is one page of /status.json's data.
func BenchmarkStatusView(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("credentials=%d", n), func(b *testing.B) {
			s := newIdle(b, n)
			b.ReportAllocs()
			for b.Loop() {
				s.page.DataPage(1)
			}
		})
	}
}
