package broker

import (
	"sync"
	"time"

	"go.uber.org/zap"
)

// upstreamHealth logs an upstream's outages: one line when it starts
// failing, one when it answers again with the count of requests that got no
// token meanwhile. A request answered 503 during an outage logs nothing of
// its own, so an outage under load is two lines, not one per request.
type upstreamHealth struct {
	log *zap.Logger

	mu   sync.Mutex         // guards down
	down map[string]*outage // by upstream name; only upstreams failing now
}

type outage struct {
	since  time.Time
	failed int64 // requests answered without a token
}

func newUpstreamHealth(log *zap.Logger) *upstreamHealth {
	return &upstreamHealth{log: log, down: make(map[string]*outage)}
}

// failing records a request that got no token because the upstream is
// unwell (not because it refused the client). The first one logs.
func (h *upstreamHealth) failing(up string, err error, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	o := h.down[up]
	if o == nil {
		o = &outage{since: now}
		h.down[up] = o
		h.log.Warn("broker: upstream failing; requests get 503 until it answers again",
			zap.String("upstream", up), zap.Error(err))
	}
	o.failed++
}

// answered records an answer from the upstream (a token or a refusal of
// the client); after an outage it logs the recovery once.
func (h *upstreamHealth) answered(up string, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	o := h.down[up]
	if o == nil {
		return
	}
	delete(h.down, up)
	h.log.Info("broker: upstream answering again",
		zap.String("upstream", up), zap.Int64("failed_requests", o.failed), zap.Duration("outage", now.Sub(o.since)))
}
