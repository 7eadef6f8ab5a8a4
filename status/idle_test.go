package status

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
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
	p := New(tokens, nil, budget.NewMeter(nil, clk.now, nil, nil), creds, nil)
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

// TestStatusPages: past MaxRows the page lists one page of rows, says how
// many there are, and ?page= shows the next ones (on /status and
// /status.json), without a link out.
func TestStatusPages(t *testing.T) {
	s := newIdle(t, 1000)
	rec := httptest.NewRecorder()
	s.page.ServeHTML(rec, httptest.NewRequest("GET", "/status?page=2", nil))
	html := rec.Body.String()
	for _, want := range []string{"rows 201–400 of 1000", `name="page"`, `value="2"`, ">cred-000200<", ">cred-000399<"} {
		if !strings.Contains(html, want) {
			t.Errorf("/status?page=2 lacks %q", want)
		}
	}
	for _, not := range []string{">cred-000199<", ">cred-000400<", "href="} {
		if strings.Contains(html, not) {
			t.Errorf("/status?page=2 has %q", not)
		}
	}
	if n := strings.Count(html, `class="row" data-kind="credential"`); n != MaxRows {
		t.Errorf("%d rows listed, want %d", n, MaxRows)
	}
	rec = httptest.NewRecorder()
	s.page.ServeJSON(rec, httptest.NewRequest("GET", "/status.json?page=9", nil))
	var d Data
	if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil {
		t.Fatal(err)
	}
	// Past the last page: the last one.
	if d.Page != 5 || d.Pages != 5 || d.RowsTotal != 1000 || d.RowsFrom != 800 || len(d.Rows) != MaxRows || d.Rows[0].Name != "cred-000800" {
		t.Errorf("page 9 of 5: page %d of %d, rows from %d of %d, %d rows", d.Page, d.Pages, d.RowsFrom, d.RowsTotal, len(d.Rows))
	}
	if !d.TotalsListedOnly || d.TotalHits != 0 {
		t.Errorf("totals: listed only %v, hits %d", d.TotalsListedOnly, d.TotalHits)
	}
}

// TestCostMeterCountsEachHitOnce: mints avoided and dollars avoided count
// every hit once, per credential and, past the series limit, under _other.
func TestCostMeterCountsEachHitOnce(t *testing.T) {
	const n = cache.CredentialSeriesLimit + 5
	s := newIdle(t, n)
	ctx := context.Background()
	cs := s.page.creds.Load()
	for i := range cs.names {
		k, _ := cs.key(i)
		if _, err := s.page.tokens.Get(ctx, k, src{clk: s.clk}); err != nil {
			t.Fatal(err)
		}
	}
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]float64{}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "tokenbroker_mints_avoided_total", "tokenbroker_cost_avoided_dollars_total":
			got[mf.GetName()] = map[string]float64{}
			for _, m := range mf.GetMetric() {
				got[mf.GetName()][m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	hits, dollars := got["tokenbroker_mints_avoided_total"], got["tokenbroker_cost_avoided_dollars_total"]
	var sum float64
	for _, v := range hits {
		sum += v
	}
	if sum != n || hits[cache.OtherCredentials] != 5 || hits["cred-000000"] != 1 {
		t.Errorf("mints avoided: %v in all, %v under _other, %v for cred-000000; want %d, 5, 1", sum, hits[cache.OtherCredentials], hits["cred-000000"], n)
	}
	if d := dollars[cache.OtherCredentials]; d < 0.0049 || d > 0.0051 {
		t.Errorf("dollars avoided under _other: %v, want 5 × 0.001", d)
	}
	if d := s.page.Data(); d.TotalHits != n {
		t.Errorf("status page: %d served from cache, want %d", d.TotalHits, n)
	}
}
