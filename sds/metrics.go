package sds

import "github.com/prometheus/client_golang/prometheus"

// Reasons a subscription is refused, the values of
// tokenbroker_sds_rejected_subscriptions_total{reason}. Never a requested
// name: anyone can send any name.
const (
	rejectNotAllowed = "not_allowed"        // the identity is outside the credential's allowed_sources
	rejectUnknown    = "unknown_credential" // no credential of that name
	rejectBadRequest = "bad_request"        // wildcard, wrong type, too many or too long names: stream closed
	rejectOverLimit  = "too_many_streams"   // a stream bound was reached: stream refused
	// The caller may have no credential at all: stream refused at open.
	rejectNoCredential = "no_credential"
	// The stream held no subscription its caller may have for SubscribeGrace: stream closed.
	rejectIdle     = "no_subscription"
	rejectStopping = "shutting_down"
)

// metrics are push mode's series. Per-credential labels go through the
// cache's label bound (cache.Tokens.CredentialLabel).
type metrics struct {
	pushes   *prometheus.CounterVec
	rejected *prometheus.CounterVec
	nacks    prometheus.Counter
	lag      *prometheus.HistogramVec
	subs     *prometheus.Desc
	streams  *prometheus.Desc
	s        *Server
}

func newMetrics(reg prometheus.Registerer, s *Server) *metrics {
	m := &metrics{
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_sds_pushes_total",
			Help: "SDS responses sent to subscribers, by credential and value: token, or fail_closed (the empty value that makes Envoy refuse the request).",
		}, []string{"credential", "value"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_sds_rejected_subscriptions_total",
			Help: "SDS subscriptions refused: not_allowed (outside allowed_sources), unknown_credential, bad_request (stream closed), too_many_streams, no_credential (the caller may have none: stream refused), no_subscription (nothing allowed subscribed within the grace period: stream closed), shutting_down.",
		}, []string{"reason"}),
		nacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokenbroker_sds_nacks_total",
			Help: "SDS responses a subscriber rejected (NACK).",
		}),
		lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokenbroker_sds_push_lag_seconds",
			Help:    "From a credential's new value (a mint, or the fail-closed value) to the last of its subscribers acknowledging it.",
			Buckets: []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"credential"}),
		subs: prometheus.NewDesc("tokenbroker_sds_subscribers",
			"SDS streams subscribed to a credential and allowed to have it.", []string{"credential"}, nil),
		streams: prometheus.NewDesc("tokenbroker_sds_streams",
			"Open SDS streams.", nil, nil),
		s: s,
	}
	for _, r := range []string{rejectNotAllowed, rejectUnknown, rejectBadRequest, rejectOverLimit, rejectNoCredential, rejectIdle, rejectStopping} {
		m.rejected.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.pushes, m.rejected, m.nacks, m.lag, m)
	}
	return m
}

// Describe implements prometheus.Collector for the gauges read at scrape time.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) { ch <- m.subs; ch <- m.streams }

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	byLabel := map[string]float64{}
	for name, n := range m.s.Subscribers() {
		byLabel[m.s.label(name)] += float64(n)
	}
	for l, v := range byLabel {
		ch <- prometheus.MustNewConstMetric(m.subs, prometheus.GaugeValue, v, l)
	}
	ch <- prometheus.MustNewConstMetric(m.streams, prometheus.GaugeValue, float64(m.s.Streams()))
}
