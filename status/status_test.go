package status

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tokenbroker/tokenbroker/budget"
	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
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
	creds := map[string]*config.Credential{
		"billing": {CostPerMint: 0.5}, "search": {}, "broken": {}, "unused": {},
	}
	p := New(tokens, nil, meter, creds)
	ctx := context.Background()
	p.Sample()
	for range 4 {
		if _, err := tokens.Get(ctx, cache.Key{ID: "b", Name: "billing"}, src{clk: clk}); err != nil {
			t.Fatal(err)
		}
		tokens.Settle() // ristretto applies Sets asynchronously
	}
	_, _ = tokens.Get(ctx, cache.Key{ID: "s", Name: "search"}, src{clk: clk})
	_, _ = tokens.Get(ctx, cache.Key{ID: "x", Name: "broken"}, src{err: errors.New("token endpoint returned 401: invalid_client")})
	p.CountMint()
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
	if len(d.Samples) != 1 || d.Samples[0].Checks != 6 || d.Samples[0].Mints != 1 {
		t.Errorf("samples %+v, want one with 6 checks and 1 mint", d.Samples)
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
		if rec.Header().Get("Cache-Control") != "no-store" {
			t.Error("status page may be cached")
		}
	}
}
