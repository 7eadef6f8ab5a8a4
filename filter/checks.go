package filter

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/internal/credlabel"
)

// Transports a Request can come through, for the status page.
const (
	TransportGRPC = "grpc" // Envoy ext_authz v3
	TransportHTTP = "http" // forward-auth
)

// Outcome is what a Check came to: allowed, or one denial reason.
type Outcome int

// Outcomes, in the order the status page shows them.
const (
	Allowed           Outcome = iota // token injected
	PassThrough                      // no route, default_action allow: allowed with nothing injected
	NoRoute                          // no route, default_action deny
	UnknownCredential                // context_extensions named a credential that does not exist
	SourceNotAllowed                 // caller not in the credential's allowed_sources
	TokenUnavailable                 // no valid token obtainable (IdP failing, back-off)
	BudgetUsedUp                     // enforced mint budget used up
	Malformed                        // the request could not be read, or exceeds a size bound
	AmbiguousPath                    // a path whose meaning depends on who decodes it
	NumOutcomes
)

// String is the outcome's name in /status.json and tokenbroker_credential_checks_total.
func (o Outcome) String() string { return outcomeNames[o] }

var outcomeNames = [NumOutcomes]string{"allowed", "pass_through", "no_route", "unknown_credential",
	"source_not_allowed", "token_unavailable", "budget", "malformed", "ambiguous_path"}

// checkResults are tokenbroker_checks_total's result values, kept as they
// were before outcomes were split: a budget denial is "unavailable" there.
var checkResults = [NumOutcomes]string{"ok", "pass_through", "no_route", "unknown_credential",
	"source_not_allowed", "unavailable", "unavailable", "malformed", "ambiguous_path"}

// Reasons sent in ReasonHeader.
const (
	ReasonNoRoute           = "no route"
	ReasonUnknownCredential = "unknown credential"
	ReasonSourceNotAllowed  = "source not allowed"
	ReasonTokenUnavailable  = "token unavailable"
	ReasonBudget            = "mint budget used up"
)

const (
	// RecentDenials bounds the denials kept for the status page: a flood of
	// denied requests costs this many entries, never more.
	RecentDenials = 50
	// maxDenialField bounds each text of a kept denial (host, path segment,
	// method, credential, principal, reason): they come from callers.
	maxDenialField = 128
)

// Denial is one denied request as the status page shows it: where it was
// going and why it was refused. It never holds a header (other than the
// destination host), a query string or a token.
type Denial struct {
	At         time.Time `json:"at"`
	Transport  string    `json:"transport"` // grpc | http
	Host       string    `json:"host"`
	Segment    string    `json:"path_segment"` // the path's first segment, e.g. /v1
	Method     string    `json:"method"`
	Outcome    Outcome   `json:"-"`
	Reason     string    `json:"reason"`
	Credential string    `json:"credential,omitempty"` // the one chosen, or the unknown one asked for
	Principal  string    `json:"source_principal,omitempty"`
}

// CredentialChecks are the cumulative Check counts of one credential label
// ("" for Checks that chose none).
type CredentialChecks struct {
	Credential string
	Counts     [NumOutcomes]int64
}

// checkCounts counts one credential label's Checks; the hit path adds to
// one of them atomically.
type checkCounts struct {
	label string
	n     [NumOutcomes]atomic.Int64
}

func (c *checkCounts) add(o Outcome) { c.n[o].Add(1) }

// Metrics count Checks by credential and outcome, whichever transport they
// came through, and keep the most recent denials. One Metrics outlives the
// filters a reload builds, so counts run on across reloads.
type Metrics struct {
	total, perCredential *prometheus.Desc
	none                 *checkCounts // Checks with no credential
	labels               *credlabel.Limiter
	now                  func() time.Time

	mu      sync.Mutex // guards byLabel
	byLabel map[string]*checkCounts

	recentMu sync.Mutex // guards recent and next
	recent   []Denial   // ring of at most RecentDenials
	next     int
}

// NewMetrics creates the Check metrics and registers them with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		total: prometheus.NewDesc("tokenbroker_checks_total",
			"Authorization checks by result: ok (token injected), pass_through (no route, default_action allow), no_route, unknown_credential, unavailable (no token obtainable, including an enforced budget used up), source_not_allowed (caller not in the credential's allowed_sources), ambiguous_path (a path whose meaning depends on who decodes it), malformed (unreadable, or over a size bound).",
			[]string{"result"}, nil),
		perCredential: prometheus.NewDesc("tokenbroker_credential_checks_total",
			"Authorization checks by credential and result: allowed, source_not_allowed, token_unavailable, budget. Credentials past the series limit share credential=\"_other\".",
			[]string{"credential", "result"}, nil),
		none:    &checkCounts{},
		now:     time.Now,
		byLabel: map[string]*checkCounts{},
		labels:  credlabel.For(reg),
	}
	if reg != nil {
		reg.MustRegister(m)
	}
	return m
}

// counts returns the counters of a configured credential. Its label comes
// from the registry's shared limiter (internal/credlabel): the first names
// get their own, later ones share its Other, so 100k credentials cost a
// bounded number of series and status rows, and the same credentials have
// series here as in every other per-credential family.
func (m *Metrics) counts(name string) *checkCounts {
	label := m.labels.Label(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.byLabel[label]; ok {
		return c
	}
	c := &checkCounts{label: label}
	m.byLabel[label] = c
	return c
}

// deny counts a denial and keeps it among the recent ones.
func (m *Metrics) deny(r *Request, c *checkCounts, o Outcome, reason, credential string) {
	if c == nil {
		c = m.none
	}
	c.add(o)
	d := Denial{
		At:         m.now(),
		Transport:  clip(r.Transport),
		Host:       clip(r.Host),
		Segment:    clip(firstSegment(r.Path)),
		Method:     clip(r.Method),
		Outcome:    o,
		Reason:     clip(reason),
		Credential: clip(credential),
		Principal:  clip(r.Principal),
	}
	m.recentMu.Lock()
	if len(m.recent) < RecentDenials {
		m.recent = append(m.recent, d)
	} else {
		m.recent[m.next] = d
	}
	m.next = (m.next + 1) % RecentDenials
	m.recentMu.Unlock()
}

// Recent returns the kept denials, newest first.
func (m *Metrics) Recent() []Denial {
	m.recentMu.Lock()
	defer m.recentMu.Unlock()
	out := make([]Denial, 0, len(m.recent))
	for i := range len(m.recent) {
		out = append(out, m.recent[(m.next-1-i+RecentDenials)%RecentDenials])
	}
	return out
}

// Checks returns the cumulative counts of every credential label, and of
// Checks that chose none (Credential "").
func (m *Metrics) Checks() []CredentialChecks {
	m.mu.Lock()
	all := make([]*checkCounts, 0, len(m.byLabel)+1)
	for _, c := range m.byLabel {
		all = append(all, c)
	}
	m.mu.Unlock()
	all = append(all, m.none)
	out := make([]CredentialChecks, len(all))
	for i, c := range all {
		out[i].Credential = c.label
		for o := range NumOutcomes {
			out[i].Counts[o] = c.n[o].Load()
		}
	}
	return out
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) { ch <- m.total; ch <- m.perCredential }

// Collect implements prometheus.Collector: every result of
// tokenbroker_checks_total (zeros too, as before), and the non-zero
// per-credential counts.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	totals := map[string]float64{}
	for _, r := range checkResults {
		totals[r] = 0
	}
	for _, c := range m.Checks() {
		for o := range NumOutcomes {
			n := float64(c.Counts[o])
			totals[checkResults[o]] += n
			if c.Credential != "" && n > 0 {
				ch <- prometheus.MustNewConstMetric(m.perCredential, prometheus.CounterValue, n, c.Credential, o.String())
			}
		}
	}
	for r, n := range totals {
		ch <- prometheus.MustNewConstMetric(m.total, prometheus.CounterValue, n, r)
	}
}

// firstSegment is the path's first segment without any query: "/v1/x?q" is "/v1".
func firstSegment(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	if !strings.HasPrefix(p, "/") {
		return p
	}
	if i := strings.IndexByte(p[1:], '/'); i >= 0 {
		return p[:i+1]
	}
	return p
}

// clip makes a caller's text safe to keep: at most maxDenialField bytes,
// printable, and copied so it does not pin the request's memory.
func clip(s string) string {
	if len(s) > maxDenialField {
		s = s[:maxDenialField]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || r == utf8.RuneError {
			return '?'
		}
		return r
	}, strings.Clone(s))
}
