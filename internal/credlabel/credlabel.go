// Package credlabel bounds the credential label of every per-credential
// metric family with one shared limiter per registry.
//
// Each labelled credential costs a few KB of series in every family
// (counters, a histogram), so 100k credentials would otherwise spend
// hundreds of MB on metrics and overwhelm any Prometheus that scraped them.
// The first Limit names seen keep a label value of their own; every later
// one shares Other. Because the families share one limiter, a credential
// has its own series in every family or in none, and the bound holds for
// the whole /metrics page, not per family.
package credlabel

import (
	"errors"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Limit is how many distinct credential label values a registry's
// per-credential families may use (Other not counted).
const Limit = 1000

// Other is the label value shared by credentials past Limit.
const Other = "_other"

// Limiter hands out credential label values. It is safe for concurrent use.
type Limiter struct {
	desc  *prometheus.Desc
	limit int

	mu   sync.Mutex          // guards seen
	seen map[string]struct{} // names with a label value of their own
}

func newLimiter(limit int) *Limiter {
	return &Limiter{
		limit: limit,
		seen:  make(map[string]struct{}),
		desc: prometheus.NewDesc("tokenbroker_metric_credentials",
			"Credentials with metric series of their own (at most "+strconv.Itoa(limit)+"); later ones share credential=\""+Other+"\".", nil, nil),
	}
}

// For returns the limiter shared by every family registered with reg,
// registering it on first use: the families need no wiring to share it.
// A nil reg (unregistered metrics) gets a limiter of its own, and so does a
// registerer that wraps reg with a prefix or labels (its descriptors differ).
func For(reg prometheus.Registerer) *Limiter {
	l := newLimiter(Limit)
	if reg == nil {
		return l
	}
	if err := reg.Register(l); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*Limiter); ok {
				return existing
			}
		}
		panic("credlabel: " + err.Error()) // a programming error, like MustRegister
	}
	return l
}

// Label is the credential label value for name: name itself for the first
// Limit names seen, Other after that.
func (l *Limiter) Label(name string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.seen[name]; ok {
		return name
	}
	if len(l.seen) < l.limit {
		l.seen[name] = struct{}{}
		return name
	}
	return Other
}

// Describe implements prometheus.Collector.
func (l *Limiter) Describe(ch chan<- *prometheus.Desc) { ch <- l.desc }

// Collect implements prometheus.Collector.
func (l *Limiter) Collect(ch chan<- prometheus.Metric) {
	l.mu.Lock()
	n := len(l.seen)
	l.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(l.desc, prometheus.GaugeValue, float64(n))
}

// CounterVec is a prometheus.CounterVec whose first label is a credential
// name, bounded by a Limiter. Only WithLabelValues is offered for counting,
// so no call can bypass the limiter.
type CounterVec struct {
	prometheus.Collector
	vec *prometheus.CounterVec
	lim *Limiter
}

// NewCounterVec makes a counter family whose first label is the credential.
func NewCounterVec(lim *Limiter, opts prometheus.CounterOpts, labels []string) *CounterVec {
	v := prometheus.NewCounterVec(opts, labels)
	return &CounterVec{Collector: v, vec: v, lim: lim}
}

// WithLabelValues returns the counter for credential (bounded) and the
// other label values.
func (v *CounterVec) WithLabelValues(credential string, rest ...string) prometheus.Counter {
	lvs := make([]string, 0, 1+len(rest))
	lvs = append(lvs, v.lim.Label(credential))
	return v.vec.WithLabelValues(append(lvs, rest...)...)
}
