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
	lookups  *prometheus.CounterVec
	mints    *prometheus.CounterVec
	mintTime *prometheus.HistogramVec
	expiry   *prometheus.Desc
	labels   *credlabel.Limiter // shared with every per-credential family of the registry

	mu     sync.Mutex // guards caches and now
	caches []*Tokens
	now    func() time.Time
}

// label is the credential label for name (bounded, see CredentialSeriesLimit).
func (m *Metrics) label(name string) string { return m.labels.Label(name) }

// NewMetrics creates the cache metrics and registers them with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_cache_lookups_total",
			Help: "Token cache lookups by credential and result (hit or miss).",
		}, []string{"credential", "result"}),
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
		now:    time.Now,
		labels: credlabel.For(reg),
	}
	if reg != nil {
		reg.MustRegister(m.lookups, m.mints, m.mintTime, m)
	}
	return m
}

// counter is a pre-resolved counter so the hit path does no label lookup.
type counter struct{ c prometheus.Counter }

func (c counter) inc() {
	if c.c != nil {
		c.c.Inc()
	}
}

func (m *Metrics) newSlot(key Key) *slot {
	l := m.label(key.Name)
	return &slot{
		key:    key,
		hits:   counter{m.lookups.WithLabelValues(l, "hit")},
		misses: counter{m.lookups.WithLabelValues(l, "miss")},
	}
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

// Describe implements prometheus.Collector for the expiry gauge.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) { ch <- m.expiry }

// Collect reports, at scrape time, how long each cached token has left;
// for OtherCredentials, the soonest expiry among them.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	caches, now := m.caches, m.now()
	m.mu.Unlock()
	// Several keys may share a label (the broker labels its keys by upstream,
	// not by client; credentials past the series limit share OtherCredentials):
	// report the soonest expiry per label, once. Each cache walks its keys
	// only when a token changed since the last scrape (summary.go).
	soonest := make(map[string]time.Time)
	for _, t := range caches {
		for l, e := range t.soonestExpiries(m.label) {
			if cur, ok := soonest[l]; !ok || e.Before(cur) {
				soonest[l] = e
			}
		}
	}
	for l, e := range soonest {
		ch <- prometheus.MustNewConstMetric(m.expiry, prometheus.GaugeValue, e.Sub(now).Seconds(), l)
	}
}
