package cache

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/tokenbroker/tokenbroker/credential"
	"github.com/tokenbroker/tokenbroker/telemetry"
)

// What the cache tells tracing and the status page. Each helper costs one
// atomic load while tracing is off.

// detach returns the context a shared mint runs in: the cache's lifetime
// (Close cancels it; no single caller can) with the asking Check's span as
// parent, so the mint and its Redis commands are children of that Check.
func (t *Tokens) detach(ctx context.Context) context.Context {
	if !telemetry.Enabled() {
		return t.ctx
	}
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return t.ctx
	}
	return trace.ContextWithSpanContext(t.ctx, sc)
}

// triggeredBy is the span of the Check that starts a background refresh.
func triggeredBy(ctx context.Context) trace.SpanContext {
	if !telemetry.Enabled() {
		return trace.SpanContext{}
	}
	return trace.SpanContextFromContext(ctx)
}

// refreshTrace starts a background refresh's own trace, linked to the Check
// that triggered it: the refresh outlives that Check, so it is not its child.
func (t *Tokens) refreshTrace(s *slot, trigger trace.SpanContext) (context.Context, func()) {
	if !telemetry.Enabled() {
		return t.ctx, func() {}
	}
	ctx, span := telemetry.StartRefresh(t.ctx, s.name, trigger)
	return ctx, func() { span.End() }
}

// startMint starts the span of one IdP request; nil while tracing is off.
func (t *Tokens) startMint(ctx context.Context, name string, attempt int) (context.Context, trace.Span) {
	if !telemetry.Enabled() {
		return ctx, nil
	}
	return telemetry.StartMint(ctx, name, attempt)
}

// endMint ends a mint span with its outcome and, after a failure, the
// back-off before the next attempt. The error text is the one the cache
// logs and the status page shows: no token or secret (credential scrubs
// them from IdP answers).
func endMint(span trace.Span, err error, latency, backoff time.Duration) {
	if span == nil {
		return
	}
	if err == nil {
		telemetry.EndMint(span, "success", latency, 0, "")
		return
	}
	if idp, ok := errors.AsType[*credential.IdPError](err); ok && span.IsRecording() {
		span.SetAttributes(telemetry.KeyStatus.Int(idp.Status))
	}
	telemetry.EndMint(span, "error", latency, backoff, err.Error())
}

// mintCounts count requests to IdPs for the status chart.
type mintCounts struct{ ok, failed atomic.Int64 }

func (m *mintCounts) count(err error) {
	if err != nil {
		m.failed.Add(1)
	} else {
		m.ok.Add(1)
	}
}

// Mints returns how many tokens this cache minted and how many mints
// failed since it was built.
func (t *Tokens) Mints() (ok, failed int64) { return t.mints.ok.Load(), t.mints.failed.Load() }

// failure is a failed mint as the status page shows it.
type failure struct {
	text string
	at   time.Time
}
