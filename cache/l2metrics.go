package cache

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/internal/credlabel"
)

// L2Metrics are the shared tier's Prometheus series. Labels carry credential
// names and outcomes, never tokens, secrets, client ids or Redis keys.
type L2Metrics struct {
	lookups     *credlabel.CounterVec
	writes      *credlabel.CounterVec
	locks       *credlabel.CounterVec
	state       prometheus.Gauge
	transitions *prometheus.CounterVec
}

// NewL2Metrics creates the shared-tier metrics and registers them with reg (nil: not registered).
func NewL2Metrics(reg prometheus.Registerer) *L2Metrics {
	lim := credlabel.For(reg) // the label bound shared with the cache's families
	m := &L2Metrics{
		lookups: credlabel.NewCounterVec(lim, prometheus.CounterOpts{
			Name: "tokenbroker_l2_lookups_total",
			Help: "Shared (Redis) cache lookups by credential and result: hit, miss, unreadable (no configured key decrypts it; a miss), error (Redis failed, timed out, or the breaker was open).",
		}, []string{"credential", "result"}),
		writes: credlabel.NewCounterVec(lim, prometheus.CounterOpts{
			Name: "tokenbroker_l2_writes_total",
			Help: "Tokens written to the shared (Redis) cache by credential and result (ok, error).",
		}, []string{"credential", "result"}),
		locks: credlabel.NewCounterVec(lim, prometheus.CounterOpts{
			Name: "tokenbroker_l2_lock_total",
			Help: "Fleet mint lock outcomes by credential: acquired (this replica mints), contended (another replica holds it), waited (got the other replica's token), timed_out (waited too long and minted itself), error.",
		}, []string{"credential", "result"}),
		state: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tokenbroker_l2_breaker_state",
			Help: "Shared cache circuit breakers (one per kind of operation: get, set, lock, count), the most open of them: 0 closed (Redis in use), 1 half-open (probing), 2 open (Redis skipped).",
		}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_l2_breaker_transitions_total",
			Help: "Shared cache circuit breaker state changes (any operation kind's breaker) by the state entered.",
		}, []string{"state"}),
	}
	if reg != nil {
		reg.MustRegister(m.lookups, m.writes, m.locks, m.state, m.transitions)
	}
	return m
}

func (m *L2Metrics) lookup(name, result string) { m.lookups.WithLabelValues(name, result).Inc() }
func (m *L2Metrics) write(name, result string)  { m.writes.WithLabelValues(name, result).Inc() }
func (m *L2Metrics) lock(name, result string)   { m.locks.WithLabelValues(name, result).Inc() }

// breakerChanged records one breaker entering to; worst is the most open
// state among all of the tier's breakers, which the gauge shows.
func (m *L2Metrics) breakerChanged(to, worst breakerState) {
	m.state.Set(float64(worst))
	m.transitions.WithLabelValues(to.String()).Inc()
}
