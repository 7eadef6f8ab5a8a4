package status

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tokenbroker/tokenbroker/budget"
	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
	"github.com/tokenbroker/tokenbroker/filter"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type src struct {
	clk *clock
	err error
}

func (s src) Token(context.Context) (credential.Token, error) {
	if s.err != nil {
		return credential.Token{}, s.err
	}
	now := s.clk.now()
	return credential.Token{Value: "tok-SECRET-VALUE", Issued: now, Expiry: now.Add(time.Hour)}, nil
}

func TestPage(t *testing.T) {
	clk := &clock{t: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	meter := budget.NewMeter(nil, clk.now, nil, nil)
	meter.Set("billing", budget.Policy{Limit: 10, Window: 24 * time.Hour, CostPerMint: 0.5})
	tokens, err := cache.New(cache.Options{Now: clk.now, MayMint: func(k cache.Key) error { return meter.Take(k.Name) }})
	if err != nil {
		t.Fatal(err)
	}
	defer tokens.Close()
	// Value files, so each credential has an identity (a cache key) of its
	// own: static credentials with inline values share one.
	dir := t.TempDir()
	for _, n := range []string{"b", "s", "x", "u"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(n), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := config.Parse("tb.yaml", []byte(`
credentials:
  billing: {type: static, value_file: `+dir+`/b, cost_per_mint: 0.5}
  search: {type: static, value_file: `+dir+`/s, allowed_sources: ["spiffe://td/ns/a/sa/app"]}
  broken: {type: static, value_file: `+dir+`/x}
  unused: {type: static, value_file: `+dir+`/u}
routes:
  - {host: billing.example.com, credential: billing}
  - {host: search.example.com, path_prefix: /v2, methods: [GET], credential: search}
  - {host: broken.example.com, credential: broken}
`))
	if err != nil {
		t.Fatal(err)
	}
	fm := filter.NewMetrics(nil)
	f, err := filter.New(cfg, map[string]credential.Source{"billing": src{clk: clk}, "search": src{clk: clk}, "unused": src{clk: clk},
		"broken": src{err: errors.New("token endpoint returned 401: invalid_client")}}, tokens, nil, fm)
	if err != nil {
		t.Fatal(err)
	}
	p := New(tokens, nil, meter, cfg.Credentials, f)
	p.SetRoutes(cfg.Routes)
	p.SetDecisions(fm)
	ctx := context.Background()
	p.Sample()
	decide := func(host, path, principal, credential string) filter.Decision {
		return f.Decide(ctx, &filter.Request{Host: host, Path: path, Method: "GET", Principal: principal, Credential: credential, Transport: filter.TransportGRPC})
	}
	for range 4 {
		if d := decide("billing.example.com", "/v1/x?key=query-SECRET", "", ""); !d.Allowed {
			t.Fatal(d)
		}
		tokens.Settle() // background refreshes started by the lookups finish
	}
	decide("search.example.com", "/v2", "spiffe://td/ns/b/sa/intruder", "")
	decide("search.example.com", "/v2", "spiffe://td/ns/a/sa/app", "")
	decide("broken.example.com", "/", "", "")
	decide("nowhere.example.com", "/admin/x", "", "")
	decide("billing.example.com", "/", "", "no-such-credential")
	p.Sample()
	clk.add(10 * time.Minute)

	d := p.Data()
	states := map[string]Row{}
	for _, r := range d.Rows {
		states[r.Name] = r
	}
	want := map[string]string{"billing": "fresh", "search": "fresh", "broken": "failing", "unused": "idle"}
	for name, st := range want {
		if states[name].State != st {
			t.Errorf("%s: state %q, want %q", name, states[name].State, st)
		}
	}
	b := states["billing"]
	if b.Hits != 3 || b.Requests != 4 || b.HitRatio != 0.75 || b.DollarsSaved != 1.5 {
		t.Errorf("billing hits %d of %d (%.2f), saved $%v; want 3 of 4, $1.5", b.Hits, b.Requests, b.HitRatio, b.DollarsSaved)
	}
	if b.MintsHour != 1 || b.BudgetLimit != 10 || b.BudgetPercent != 10 || b.ExpiresIn != 50*60 {
		t.Errorf("billing %+v", b)
	}
	// 9 Checks: 4 allowed for billing, search denied then allowed, broken
	// unavailable, one without a route, one naming an unknown credential.
	if len(d.Samples) != 1 || d.Samples[0].Checks != 9 || d.Samples[0].Mints != 2 || d.Samples[0].Failed != 1 {
		t.Errorf("samples %+v, want one with 9 Checks, 2 mints, 1 failed mint", d.Samples)
	}
	if b.ChecksHour.Allowed != 4 || b.ChecksDay.Allowed != 4 || len(b.Routes) != 1 || b.Routes[0] != "billing.example.com" {
		t.Errorf("billing checks %+v routes %v", b.ChecksHour, b.Routes)
	}
	if s := states["search"]; s.ChecksHour.SourceNotAllowed != 1 || s.ChecksHour.Allowed != 1 || s.Routes[0] != "search.example.com/v2 GET" {
		t.Errorf("search checks %+v routes %v", s.ChecksHour, s.Routes)
	}
	if br := states["broken"]; br.ChecksHour.TokenUnavailable != 1 || !strings.Contains(br.LastFailure, "invalid_client") {
		t.Errorf("broken checks %+v, last failure %q", br.ChecksHour, br.LastFailure)
	}
	want9 := Counts{Allowed: 5, NoRoute: 1, UnknownCredential: 1, SourceNotAllowed: 1, TokenUnavailable: 1}
	if d.ChecksHour != want9 || d.ChecksDay != want9 {
		t.Errorf("totals hour %+v day %+v, want %+v", d.ChecksHour, d.ChecksDay, want9)
	}
	if len(d.Denials) != 4 || d.Denials[0].Reason != "unknown credential" || d.Denials[0].Credential != "no-such-credential" ||
		d.Denials[1].Reason != "no route" || d.Denials[1].Segment != "/admin" || d.Denials[3].Principal != "spiffe://td/ns/b/sa/intruder" {
		t.Errorf("recent denials %+v", d.Denials)
	}
	// Two hours on, the hour is empty and the day still counts them.
	clk.add(2 * time.Hour)
	if d := p.Data(); d.ChecksHour.Total() != 0 || d.ChecksDay != want9 {
		t.Errorf("after 2h: hour %+v day %+v", d.ChecksHour, d.ChecksDay)
	}

	for _, serve := range []func(*httptest.ResponseRecorder){
		func(w *httptest.ResponseRecorder) { p.ServeHTML(w, httptest.NewRequest("GET", "/status", nil)) },
		func(w *httptest.ResponseRecorder) { p.ServeJSON(w, httptest.NewRequest("GET", "/status.json", nil)) },
	} {
		rec := httptest.NewRecorder()
		serve(rec)
		body := rec.Body.String()
		if strings.Contains(body, "SECRET") {
			t.Error("a token is on the page")
		}
		if !strings.Contains(body, "billing") || !strings.Contains(body, "invalid_client") {
			t.Errorf("page lacks rows or the failure: %.300s", body)
		}
		for _, ext := range []string{"http://", "https://", "href=", "src="} {
			if strings.Contains(body, ext) {
				t.Errorf("the page links out (%s)", ext)
			}
		}
		if rec.Header().Get("Cache-Control") != "no-store" {
			t.Error("status page may be cached")
		}
	}
}

// TestChart: axes with labels on both sides and in time, each sample at
// its own time (two samples are two bars at the right end, not a line
// across the width), and mints and failed mints as different marks.
func TestChart(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	svg := string(chart([]Sample{
		{At: now.Add(-10 * time.Second), Checks: 40, Mints: 1},
		{At: now, Checks: 10, Failed: 2},
	}, now))
	for _, want := range []string{">time (UTC)<", ">Checks / 10s<", ">mints / 10s<", ">11:45:00<", ">12:00:00<",
		`class="tick yl">40<`, `<circle class="mint"`, `<path class="failed"`, "2 shown of 90"} {
		if !strings.Contains(svg, want) {
			t.Errorf("chart lacks %q", want)
		}
	}
	xs := regexp.MustCompile(`<rect class="checks" x="([0-9.]+)"`).FindAllStringSubmatch(svg, -1)
	if len(xs) != 2 {
		t.Fatalf("%d bars for 2 samples", len(xs))
	}
	for _, m := range xs {
		if x, _ := strconv.ParseFloat(m[1], 64); x < 56+1048*0.95 {
			t.Errorf("a bar at x=%v: two samples spread over the width", x)
		}
	}
	if strings.Contains(svg, "polyline") {
		t.Error("a line is drawn between samples")
	}
	if empty := string(chart(nil, now)); !strings.Contains(empty, "collecting samples") || !strings.Contains(empty, ">time (UTC)<") {
		t.Error("an empty chart has no axes or no note")
	}
}
