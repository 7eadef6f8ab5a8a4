package telemetry

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Attribute keys of tokenbroker's spans. Values are configuration names,
// outcomes and numbers: never a token, secret, assertion or header value.
const (
	KeyTransport  = attribute.Key("tokenbroker.transport")  // grpc | http
	KeyCredential = attribute.Key("tokenbroker.credential") // a configured credential name
	KeyRoute      = attribute.Key("tokenbroker.route")      // host[/path_prefix] of the route, or "context_extensions"
	KeyDecision   = attribute.Key("tokenbroker.decision")   // allow | deny
	KeyReason     = attribute.Key("tokenbroker.reason")     // a denial's reason (x-tokenbroker-reason)
	KeyCache      = attribute.Key("tokenbroker.cache")      // hit | miss | refresh
	KeyStatus     = attribute.Key("http.response.status_code")

	KeyAttempt    = attribute.Key("tokenbroker.mint.attempt")    // 1 for the first try after a success
	KeyBackoff    = attribute.Key("tokenbroker.mint.backoff_ms") // delay before the next try, after a failure
	KeyLatency    = attribute.Key("tokenbroker.mint.latency_ms")
	KeyMintResult = attribute.Key("tokenbroker.mint.result") // success | error | skipped
	KeyIdPHost    = attribute.Key("server.address")          // the token endpoint's host
	KeyAuthMethod = attribute.Key("tokenbroker.idp.auth_method")
	KeyBroker     = attribute.Key("tokenbroker.broker.path")
)

// Cache outcomes for KeyCache.
const (
	CacheHit     = "hit"
	CacheMiss    = "miss"
	CacheRefresh = "refresh" // a hit that started a background refresh
)

// Recording returns ctx's span when tracing is on and that span is being
// recorded, else nil. Hooks on hot paths use it so that an unsampled or
// untraced request builds no attributes.
func Recording(ctx context.Context) trace.Span {
	if !Enabled() {
		return nil
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		return span
	}
	return nil
}

// NoteCache records how the cache answered on ctx's span.
func NoteCache(ctx context.Context, outcome string) {
	if span := Recording(ctx); span != nil {
		span.SetAttributes(KeyCache.String(outcome))
	}
}

// StartCheck starts the span of one Check, a child of the trace the request
// carries (ctx already holds it: see Extract).
func StartCheck(ctx context.Context, transport string) (context.Context, trace.Span) {
	ctx, span := Tracer().Start(ctx, "Check", serverSpan...)
	if span.IsRecording() { // attributes only for kept spans: most Checks are not sampled
		span.SetAttributes(KeyTransport.String(transport))
	}
	return ctx, span
}

// serverSpan is built once: options cost allocations on every Check.
var serverSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)}

// EndCheck records a Check's decision and ends its span. status is the
// HTTP status the caller is answered with; reason is "" when allowed.
func EndCheck(span trace.Span, allowed bool, status int, reason string) {
	if span.IsRecording() {
		decision := "allow"
		if !allowed {
			decision = "deny"
		}
		span.SetAttributes(KeyDecision.String(decision), KeyStatus.Int(status))
		if reason != "" {
			span.SetAttributes(KeyReason.String(reason))
		}
	}
	span.End()
}

// StartMint starts the span of one request to an IdP. It is a child of the
// Check (or refresh) in ctx; attempt counts consecutive tries.
func StartMint(ctx context.Context, credential string, attempt int) (context.Context, trace.Span) {
	return Tracer().Start(ctx, "mint", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(KeyCredential.String(credential), KeyAttempt.Int(attempt)))
}

// EndMint records a mint's outcome and ends its span. errText must already
// be free of secrets (the cache's mint errors are: they are logged too).
func EndMint(span trace.Span, result string, latency, backoff time.Duration, errText string) {
	if span.IsRecording() {
		span.SetAttributes(KeyMintResult.String(result), KeyLatency.Float64(ms(latency)))
		if backoff > 0 {
			span.SetAttributes(KeyBackoff.Float64(ms(backoff)))
		}
		if errText != "" {
			span.SetStatus(codes.Error, errText)
		}
	}
	span.End()
}

// StartRefresh starts a background refresh as a trace of its own, linked to
// the span of the Check that triggered it (trigger may be invalid: no link).
func StartRefresh(ctx context.Context, credential string, trigger trace.SpanContext) (context.Context, trace.Span) {
	opts := []trace.SpanStartOption{trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(KeyCredential.String(credential))}
	if trigger.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: trigger}))
	}
	return Tracer().Start(ctx, "refresh", opts...)
}

// NoteIdP records the token endpoint's host and the client authentication
// method on the mint span in ctx.
func NoteIdP(ctx context.Context, host, authMethod string) {
	if span := Recording(ctx); span != nil {
		span.SetAttributes(KeyIdPHost.String(host), KeyAuthMethod.String(authMethod))
	}
}

// NoteStatus records the HTTP status an IdP answered with on ctx's span.
func NoteStatus(ctx context.Context, status int) {
	if span := Recording(ctx); span != nil {
		span.SetAttributes(KeyStatus.Int(status))
	}
}

// Annotate adds attributes to ctx's span when it is recorded. The caller
// must guard the call with Enabled where allocation matters.
func Annotate(ctx context.Context, kv ...attribute.KeyValue) {
	if span := Recording(ctx); span != nil {
		span.SetAttributes(kv...)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
