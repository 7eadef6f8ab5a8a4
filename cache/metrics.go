package cache

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/internal/credlabel"
)

// CredentialSeriesLimit bounds how many credentials get metric series of
// their own, across every per-credential family of a registry; credentials
// beyond it share the label credential="_other" (see internal/credlabel).
const CredentialSeriesLimit = credlabel.Limit

// OtherCredentials is the credential label shared past CredentialSeriesLimit.
const OtherCredentials = credlabel.Other

// Metrics are the cache's Prometheus series. Labels carry credential names,
// never tokens, secrets or client ids.
type Metrics struct {
	lookups  *prometheus.Desc // counted in each slot (the hit path's only write), summed at scrape time
	mints    *prometheus.CounterVec
	mintTime *prometheus.HistogramVec
	expiry   *prometheus.Desc
	labels   *credlabel.Limiter // shared with every per-credential family of the registry

	mu      sync.Mutex // guards caches, now and retired
	caches  []*Tokens
	now     func() time.Time
	retired map[string]lookups // by label: lookups of keys evicted or forgotten, so the counters never go down
}

// lookups are a label's hit and miss counts.
type lookups struct{ hits, misses uint64 }

// retiredLookups copies the lookups of keys gone, by label.
func (m *Metrics) retiredLookups() map[string]lookups {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]lookups, len(m.retired))
	for l, r := range m.retired {
		out[l] = r
	}
	return out
}

// label is the credential label for name (bounded, see CredentialSeriesLimit).
func (m *Metrics) label(name string) string { return m.labels.Label(name) }

// NewMetrics creates the cache metrics and registers them with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		lookups: prometheus.NewDesc("tokenbroker_cache_lookups_total",
			"Token cache lookups by credential and result (hit or miss).",
			[]string{"credential", "result"}, nil),
		mints: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_mints_total",
			Help: "Token requests to identity providers by credential and result (success, error, skipped = refused during back-off without asking the IdP).",
		}, []string{"credential", "result"}),
		mintTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokenbroker_mint_duration_seconds",
			Help:    "Latency of token requests to identity providers.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"credential"}),
		expiry: prometheus.NewDesc("tokenbroker_token_expiry_seconds",
			"Seconds until the cached token of each credential expires (negative once expired).",
			[]string{"credential"}, nil),
		now:     time.Now,
		labels:  credlabel.For(reg),
		retired: make(map[string]lookups),
	}
	if reg != nil {
		reg.MustRegister(m.mints, m.mintTime, m)
	}
	return m
}

func (m *Metrics) newSlot(key Key) *slot {
	return &slot{id: key.ID, name: key.Name, local: key.Local, labelled: m.label(key.Name) == key.Name}
}

// labelOf is s's credential label, decided when s was made.
func labelOf(s *slot) string {
	if s.labelled {
		return s.name
	}
	return OtherCredentials
}

// retire keeps the lookups of s, leaving the cache, in its label's totals.
func (m *Metrics) retire(s *slot, hits uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := labelOf(s)
	r := m.retired[l]
	r.hits += hits
	r.misses += uint64(s.misses.Load())
	m.retired[l] = r
}

func (m *Metrics) minted(name string, err error, latency time.Duration) {
	result := "success"
	if err != nil {
		result = "error"
	}
	l := m.label(name)
	m.mints.WithLabelValues(l, result).Inc()
	m.mintTime.WithLabelValues(l).Observe(latency.Seconds())
}

func (m *Metrics) mintSkipped(name string) { m.mints.WithLabelValues(m.label(name), "skipped").Inc() }

func (m *Metrics) watch(t *Tokens) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.caches = append(m.caches, t)
	m.now = t.opts.Now
}

func (m *Metrics) unwatch(t *Tokens) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, c := range m.caches {
		if c == t {
			m.caches = append(m.caches[:i:i], m.caches[i+1:]...)
			break
		}
	}
}

// Describe implements prometheus.Collector for the lookup counters and the
// expiry gauge.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.lookups
	ch <- m.expiry
}

// Collect reports, at scrape time, the lookups of every label (the slots'
// own counters, plus those of keys gone since) and how long each cached
// token has left; for OtherCredentials, the soonest expiry among them.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	caches, now := m.caches, m.now()
	counts := make(map[string]lookups, len(m.retired))
	for l, r := range m.retired {
		counts[l] = r
	}
	m.mu.Unlock()
	// Several keys may share a label (the broker labels its keys by upstream,
	// not by client; credentials past the series limit share OtherCredentials):
	// report the soonest expiry per label, once. Each cache walks its keys
	// only when something changed since the last scrape (summary.go).
	soonest := make(map[string]time.Time)
	for _, t := range caches {
		for l, c := range t.labelSums() {
			n := counts[l]
			n.hits += c.hits
			n.misses += c.misses
			counts[l] = n
			if c.soonest.IsZero() {
				continue
			}
			if e, ok := soonest[l]; !ok || c.soonest.Before(e) {
				soonest[l] = c.soonest
			}
		}
	}
	for l, c := range counts {
		ch <- prometheus.MustNewConstMetric(m.lookups, prometheus.CounterValue, float64(c.hits), l, "hit")
		ch <- prometheus.MustNewConstMetric(m.lookups, prometheus.CounterValue, float64(c.misses), l, "miss")
	}
	for l, e := range soonest {
		ch <- prometheus.MustNewConstMetric(m.expiry, prometheus.GaugeValue, e.Sub(now).Seconds(), l)
	}
}
