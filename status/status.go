// Package status renders what the cache holds and what it saved: the admin
// /status page (server-rendered HTML, no external assets) and /status.json.
// It shows names, states, times and counts; never a token or a secret.
package status

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/budget"
	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/filter"
)

// History is how many samples the chart keeps.
const History = 90

// Page gathers status from the cache, the broker and the budget meter.
type Page struct {
	tokens  *cache.Tokens
	broker  atomic.Pointer[broker.Broker] // nil when the broker is off; swapped by a reload
	meter   *budget.Meter
	creds   atomic.Pointer[credentials] // and their routes; swapped by a configuration reload
	setMu   sync.Mutex                  // serialises SetCredentials and SetRoutes
	refresh time.Duration
	// subscribers reports push mode's SDS subscribers per credential.
	subscribers atomic.Pointer[func() map[string]int]

	decisions atomic.Pointer[Decisions] // the filter's Check counts; nil: none yet

	mu      sync.Mutex // guards samples, last and win
	samples []Sample
	last    Sample
	win     windows
}

// Sample is the Checks (decisions, every outcome), mints and failed mints
// in the interval of the chart that ends At.
type Sample struct {
	At     time.Time `json:"at"`
	Mints  int64     `json:"mints"`
	Failed int64     `json:"failed_mints"`
	Checks int64     `json:"checks"`
}

// New builds a page. b may be nil; keys as for SetCredentials.
func New(tokens *cache.Tokens, b *broker.Broker, meter *budget.Meter, creds map[string]*config.Credential, keys Keys) *Page {
	p := &Page{tokens: tokens, meter: meter, refresh: 5 * time.Second}
	p.broker.Store(b)
	p.SetCredentials(creds, keys)
	return p
}

// SetCredentials replaces the credentials the page lists (after a reload).
// It reads their names and prices now and keeps neither creds nor any
// credential in it; keys (the filter built from the same configuration)
// finds their cache keys. With keys nil the page computes them itself.
// The credentials that stay keep their routes until SetRoutes.
func (p *Page) SetCredentials(creds map[string]*config.Credential, keys Keys) {
	p.setMu.Lock()
	defer p.setMu.Unlock()
	c := newCredentials(creds, keys)
	if old := p.creds.Load(); old != nil {
		c.routes = old.routes.realign(old.names, c.names)
	}
	p.creds.Store(c)
}

// SetBroker replaces the broker whose clients the page lists (nil: off).
func (p *Page) SetBroker(b *broker.Broker) { p.broker.Store(b) }

// SetRoutes replaces the routes shown with each credential (after a
// reload, after SetCredentials: routes of credentials the page does not
// list are not kept).
func (p *Page) SetRoutes(routes []config.Route) {
	p.setMu.Lock()
	defer p.setMu.Unlock()
	c := *p.creds.Load()
	c.routes = newRouteTexts(c.names, routes)
	p.creds.Store(&c)
}

// SetDecisions makes the page count Checks from d (the filter's metrics,
// which outlive reloads).
func (p *Page) SetDecisions(d Decisions) { p.decisions.Store(&d) }

// CountMint is kept for callers: the chart now counts mints and failed
// mints where they happen, in the cache.
func (p *Page) CountMint() {}

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
	Routes        []string  `json:"routes"`
	LastFailure   string    `json:"last_failure,omitempty"` // why the latest failed mint failed, even after recovery
	LastFailureAt time.Time `json:"last_failure_at,omitzero"`
	ChecksHour    Counts    `json:"checks_hour"`
	ChecksDay     Counts    `json:"checks_day"`
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
	// Checks are every credential's Checks by outcome over the last hour
	// and day; ChecksHour and ChecksDay add them all up.
	Checks     []CheckRow      `json:"checks"`
	ChecksHour Counts          `json:"checks_hour"`
	ChecksDay  Counts          `json:"checks_day"`
	Denials    []filter.Denial `json:"recent_denials"`
	// Rows are page Page of Pages (MaxRows each), starting at row RowsFrom
	// of RowsTotal. TotalsListedOnly: TotalMints30 and TotalSpent add up the
	// listed rows only.
	RowsTotal        int  `json:"rows_total"`
	RowsFrom         int  `json:"rows_from"`
	Page             int  `json:"page"`
	Pages            int  `json:"pages"`
	TotalsListedOnly bool `json:"totals_listed_rows_only"`
}

// Sample closes one chart interval; the server calls it on a ticker.
// Checks are counted from the filter's decisions (allowed and denied, on
// both transports), mints from the cache.
func (p *Page) Sample() {
	var checks int64
	var byCred []filter.CredentialChecks
	if d := p.decisions.Load(); d != nil {
		byCred = (*d).Checks()
		for _, c := range byCred {
			for _, n := range c.Counts {
				checks += n
			}
		}
	}
	ok, failed := p.tokens.Mints()
	cur := Sample{At: p.tokens.Now(), Mints: ok, Failed: failed, Checks: checks}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.win.sample(cur.At, byCred)
	if !p.last.At.IsZero() {
		p.samples = append(p.samples, Sample{At: cur.At, Mints: cur.Mints - p.last.Mints, Failed: cur.Failed - p.last.Failed, Checks: cur.Checks - p.last.Checks})
		if len(p.samples) > History {
			p.samples = p.samples[len(p.samples)-History:]
		}
	}
	p.last = cur
}

// MaxRows is how many rows one view of the page lists: a page of 100k
// credentials is itself a cost, to build and to read. The rest are a count
// and further pages (?page=2, …).
const MaxRows = 200

// Data gathers the current state: the first page of rows.
func (p *Page) Data() Data { return p.DataPage(1) }

// DataPage gathers the current state with the rows of page n (1-based):
// rows are built only for the credentials and broker clients listed, so a
// view costs O(MaxRows) row work whatever the number of credentials.
func (p *Page) DataPage(n int) Data {
	now := p.tokens.Now()
	d := Data{Now: now}
	p.mu.Lock()
	d.Checks = p.win.rows(now)
	p.mu.Unlock()
	checksOf := make(map[string]CheckRow, len(d.Checks))
	for _, c := range d.Checks {
		checksOf[c.Credential] = c
		d.ChecksHour.add(c.Hour)
		d.ChecksDay.add(c.Day)
	}
	if dec := p.decisions.Load(); dec != nil {
		d.Denials = (*dec).Recent()
	}
	cs := p.creds.Load()
	var clients []broker.ClientState
	b := p.broker.Load()
	if b != nil {
		clients = b.Clients() // bounded by the broker
	}
	d.RowsTotal = len(cs.names) + len(clients)
	n = max(1, min(n, (d.RowsTotal+MaxRows-1)/MaxRows))
	from := (n - 1) * MaxRows
	to := min(from+MaxRows, d.RowsTotal)
	d.Page, d.Pages, d.RowsFrom = n, max(1, (d.RowsTotal+MaxRows-1)/MaxRows), from
	var subs map[string]int
	if from < len(cs.names) {
		subs = p.subscriberCounts()
	}
	for i := from; i < to && i < len(cs.names); i++ {
		name := cs.names[i]
		r := Row{Kind: "credential", Name: name, CostPerMint: cs.costPerMint(name), Routes: cs.routes.of(i, name), Subscribers: subs[name],
			ChecksHour: checksOf[name].Hour, ChecksDay: checksOf[name].Day}
		if k, ok := cs.key(i); !ok {
			// The filter in force does not know it yet: listed without state.
		} else if s, ok := p.tokens.State(cache.Key{ID: k.ID, Name: name}); ok {
			r.fold(s, now)
			r.Requests += int64(s.Hits + s.Misses)
			r.Hits += int64(s.Hits)
		}
		p.usage(&r, name)
		d.Rows = append(d.Rows, r)
	}
	for i := max(from, len(cs.names)); i < to; i++ {
		c := clients[i-len(cs.names)]
		r := Row{Kind: "broker_client", Name: c.ClientID, Upstream: c.Upstream, CostPerMint: c.CostPerMint,
			Requests: c.Requests, Hits: c.Cached}
		for _, k := range c.Keys {
			if s, ok := p.tokens.State(k); ok {
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
	sortRows(d.Rows) // broker clients come sorted by upstream then id; keeps the order if that changes
	for i := range d.Rows {
		r := &d.Rows[i]
		if r.Requests > 0 {
			r.HitRatio = float64(r.Hits) / float64(r.Requests)
		}
		r.DollarsSaved = float64(r.Hits) * r.CostPerMint
		r.DollarsSpent = float64(r.Mints30d) * r.CostPerMint
		// 30-day mints are read per credential from the budget counter
		// (Redis in a fleet): summed over the rows listed, not all of them.
		d.TotalSpent += r.DollarsSpent
		d.TotalMints30 += r.Mints30d
	}
	d.TotalsListedOnly = len(d.Rows) < d.RowsTotal
	// Hits and dollars avoided are the cost meter's (metrics.go), over every
	// credential and broker client, listed or not.
	hits, saved := p.costAvoided()
	for l, h := range hits {
		d.TotalHits += int64(h)
		d.TotalSaved += saved[l]
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
	if s.LastFailure != "" && s.LastFailureAt.After(r.LastFailureAt) {
		r.LastFailure, r.LastFailureAt = s.LastFailure, s.LastFailureAt
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

// pageOf is the ?page= of a request, 1 when absent or not a number.
func pageOf(r *http.Request) int {
	n, err := strconv.Atoi(r.URL.Query().Get("page"))
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// ServeJSON serves /status.json (?page=n for rows past the first MaxRows).
func (p *Page) ServeJSON(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(p.DataPage(pageOf(r)))
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
