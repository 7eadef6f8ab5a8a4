// Package status renders what the cache holds and what it saved: the admin
// /status page (server-rendered HTML, no external assets) and /status.json.
// It shows names, states, times and counts; never a token or a secret.
package status

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/budget"
	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
)

// History is how many samples the chart keeps.
const History = 90

// Page gathers status from the cache, the broker and the budget meter.
type Page struct {
	tokens  *cache.Tokens
	broker  *broker.Broker // nil when the broker is off
	meter   *budget.Meter
	creds   atomic.Pointer[map[string]*config.Credential] // swapped by a configuration reload
	refresh time.Duration
	mints   atomic.Int64 // mint attempts, counted by the cache gate
	// subscribers reports push mode's SDS subscribers per credential.
	subscribers atomic.Pointer[func() map[string]int]

	mu      sync.Mutex // guards samples and last
	samples []Sample
	last    Sample
}

// Sample is the mints and Checks in one interval of the chart.
type Sample struct {
	At     time.Time `json:"at"`
	Mints  int64     `json:"mints"`
	Checks int64     `json:"checks"`
}

// New builds a page. b may be nil.
func New(tokens *cache.Tokens, b *broker.Broker, meter *budget.Meter, creds map[string]*config.Credential) *Page {
	p := &Page{tokens: tokens, broker: b, meter: meter, refresh: 5 * time.Second}
	p.SetCredentials(creds)
	return p
}

// SetCredentials replaces the credentials the page lists (after a reload).
func (p *Page) SetCredentials(creds map[string]*config.Credential) { p.creds.Store(&creds) }

// CountMint records one mint attempt for the chart.
func (p *Page) CountMint() { p.mints.Add(1) }

// Row is one credential or broker client.
type Row struct {
	Kind          string    `json:"kind"` // credential | broker_client
	Name          string    `json:"name"`
	Upstream      string    `json:"upstream,omitempty"`
	State         string    `json:"state"` // fresh | refreshing | failing | expired | idle
	ExpiresAt     time.Time `json:"expires_at,omitzero"`
	ExpiresIn     float64   `json:"expires_in_seconds"`
	LastMint      time.Time `json:"last_mint,omitzero"`
	LastLatencyMS float64   `json:"last_mint_latency_ms"`
	LastError     string    `json:"last_error,omitempty"`
	MintsHour     int64     `json:"mints_hour"`
	MintsDay      int64     `json:"mints_day"`
	Mints30d      int64     `json:"mints_30d"`
	BudgetLimit   int64     `json:"budget_limit"`
	BudgetUsed    int64     `json:"budget_used"`
	BudgetWindow  string    `json:"budget_window,omitempty"`
	BudgetPercent float64   `json:"budget_percent"`
	Enforce       bool      `json:"budget_enforced"`
	Requests      int64     `json:"requests"`
	Subscribers   int       `json:"sds_subscribers"` // Envoy streams the value is pushed to (push mode)
	Hits          int64     `json:"served_from_cache"`
	HitRatio      float64   `json:"hit_ratio"`
	CostPerMint   float64   `json:"cost_per_mint"`
	DollarsSpent  float64   `json:"dollars_spent_30d"`
	DollarsSaved  float64   `json:"dollars_avoided"`
}

// Data is everything on the page.
type Data struct {
	Now          time.Time `json:"now"`
	Rows         []Row     `json:"rows"`
	Samples      []Sample  `json:"samples"`
	TotalSaved   float64   `json:"dollars_avoided"`
	TotalSpent   float64   `json:"dollars_spent_30d"`
	TotalHits    int64     `json:"served_from_cache"`
	TotalMints30 int64     `json:"mints_30d"`
}

// Sample closes one chart interval; the server calls it on a ticker.
func (p *Page) Sample() {
	var checks int64
	for _, s := range p.tokens.Snapshot() {
		if !broker.Owns(s.Key) {
			checks += int64(s.Hits + s.Misses)
		}
	}
	if p.broker != nil {
		for _, c := range p.broker.Clients() {
			checks += c.Requests
		}
	}
	cur := Sample{At: p.tokens.Now(), Mints: p.mints.Load(), Checks: checks}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.last.At.IsZero() {
		p.samples = append(p.samples, Sample{At: cur.At, Mints: cur.Mints - p.last.Mints, Checks: cur.Checks - p.last.Checks})
		if len(p.samples) > History {
			p.samples = p.samples[len(p.samples)-History:]
		}
	}
	p.last = cur
}

// Data gathers the current state.
func (p *Page) Data() Data {
	now := p.tokens.Now()
	snap := p.tokens.Snapshot()
	byID := make(map[string]cache.SlotState, len(snap))
	byName := make(map[string][]cache.SlotState)
	for _, s := range snap {
		byID[s.Key.ID] = s
		byName[s.Key.Name] = append(byName[s.Key.Name], s)
	}
	d := Data{Now: now}
	subs := p.subscriberCounts()
	for name, cr := range *p.creds.Load() {
		r := Row{Kind: "credential", Name: name, CostPerMint: cr.CostPerMint, Subscribers: subs[name]}
		for _, s := range byName[name] {
			r.fold(s, now)
			r.Requests += int64(s.Hits + s.Misses)
			r.Hits += int64(s.Hits)
		}
		p.usage(&r, name)
		d.Rows = append(d.Rows, r)
	}
	if p.broker != nil {
		for _, c := range p.broker.Clients() {
			r := Row{Kind: "broker_client", Name: c.ClientID, Upstream: c.Upstream, CostPerMint: c.CostPerMint,
				Requests: c.Requests, Hits: c.Cached}
			for _, k := range c.Keys {
				if s, ok := byID[k.ID]; ok {
					r.fold(s, now)
				}
			}
			// The broker times the real IdP request; the cache may only
			// have been handed the token (and timed nothing).
			if !c.LastMint.IsZero() {
				r.LastMint, r.LastLatencyMS = c.LastMint, ms(c.LastLatency)
			}
			p.usage(&r, c.MeterName)
			d.Rows = append(d.Rows, r)
		}
	}
	sortRows(d.Rows)
	for i := range d.Rows {
		r := &d.Rows[i]
		if r.Requests > 0 {
			r.HitRatio = float64(r.Hits) / float64(r.Requests)
		}
		r.DollarsSaved = float64(r.Hits) * r.CostPerMint
		r.DollarsSpent = float64(r.Mints30d) * r.CostPerMint
		d.TotalSaved += r.DollarsSaved
		d.TotalSpent += r.DollarsSpent
		d.TotalHits += r.Hits
		d.TotalMints30 += r.Mints30d
	}
	p.mu.Lock()
	d.Samples = append([]Sample{}, p.samples...)
	p.mu.Unlock()
	return d
}

// fold merges one cache slot into the row: the soonest-expiring token and
// the worst state win.
func (r *Row) fold(s cache.SlotState, now time.Time) {
	state := "idle"
	switch {
	case s.HasToken && now.Before(s.Until) && s.Refreshing:
		state = "refreshing"
	case s.Failures > 0:
		state = "failing"
	case s.HasToken && now.Before(s.Until):
		state = "fresh"
	case s.HasToken, !s.LastMint.IsZero():
		state = "expired" // or invalidated: nothing valid to hand out
	}
	if rank[state] > rank[r.State] {
		r.State = state
	}
	if s.HasToken && (r.ExpiresAt.IsZero() || s.Expiry.Before(r.ExpiresAt)) {
		r.ExpiresAt = s.Expiry
		r.ExpiresIn = s.Expiry.Sub(now).Seconds()
	}
	if s.LastMint.After(r.LastMint) {
		r.LastMint, r.LastLatencyMS = s.LastMint, ms(s.LastLatency)
	}
	if s.LastError != "" {
		r.LastError = s.LastError
	}
}

var rank = map[string]int{"": 0, "idle": 1, "fresh": 2, "refreshing": 3, "expired": 4, "failing": 5}

func (p *Page) usage(r *Row, name string) {
	if r.State == "" {
		r.State = "idle"
	}
	if p.meter == nil {
		return
	}
	u := p.meter.Usage(name)
	r.MintsHour, r.MintsDay, r.Mints30d = u.Hour, u.Day, u.Month
	if u.Policy.Limit > 0 {
		r.BudgetLimit, r.BudgetUsed, r.Enforce = u.Policy.Limit, u.Used, u.Policy.Enforce
		r.BudgetWindow = window(u.Policy.Window)
		r.BudgetPercent = min(100, 100*float64(u.Used)/float64(u.Policy.Limit))
		if u.Policy.Enforce && u.Used >= u.Policy.Limit && r.LastError == "" {
			r.LastError = "budget used up · minting paused"
		}
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// ServeJSON serves /status.json.
func (p *Page) ServeJSON(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(p.Data())
}

// window writes a budget window the way people say it: 30d, 24h, 90m.
func window(d time.Duration) string {
	switch {
	case d%(24*time.Hour) == 0:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return d.String()
}
