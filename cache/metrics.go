package cache

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the cache's Prometheus series. Labels carry credential names,
// never tokens, secrets or client ids.
type Metrics struct {
	lookups  *prometheus.CounterVec
	mints    *prometheus.CounterVec
	mintTime *prometheus.HistogramVec
	expiry   *prometheus.Desc
	mu       sync.Mutex
	caches   []*Tokens
	now      func() time.Time
}

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
		now: time.Now,
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
	return &slot{
		key:    key,
		hits:   counter{m.lookups.WithLabelValues(key.Name, "hit")},
		misses: counter{m.lookups.WithLabelValues(key.Name, "miss")},
	}
}

func (m *Metrics) minted(name string, err error, latency time.Duration) {
	result := "success"
	if err != nil {
		result = "error"
	}
	m.mints.WithLabelValues(name, result).Inc()
	m.mintTime.WithLabelValues(name).Observe(latency.Seconds())
}

func (m *Metrics) mintSkipped(name string) { m.mints.WithLabelValues(name, "skipped").Inc() }

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

// Collect reports, at scrape time, how long each cached token has left.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	caches, now := m.caches, m.now()
	m.mu.Unlock()
	// Several keys may share a name (the broker labels its keys by upstream,
	// not by client): report the soonest expiry per name, once.
	soonest := make(map[string]time.Time)
	for _, t := range caches {
		t.slots.Range(func(_, v any) bool {
			s := v.(*slot)
			s.mu.Lock()
			cur := s.cur
			s.mu.Unlock()
			if cur != nil {
				if e, ok := soonest[s.key.Name]; !ok || cur.tok.Expiry.Before(e) {
					soonest[s.key.Name] = cur.tok.Expiry
				}
			}
			return true
		})
	}
	for name, e := range soonest {
		ch <- prometheus.MustNewConstMetric(m.expiry, prometheus.GaugeValue, e.Sub(now).Seconds(), name)
	}
}
