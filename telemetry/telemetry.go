// Package telemetry sets up OpenTelemetry tracing for tokenbroker: the OTLP
// exporter (gRPC or HTTP/protobuf), the sampler, the resource and the
// propagators (W3C Trace Context and B3, single and multi header), all from
// the standard OTEL_* variables or the tracing: section.
//
// It knows spans and their attributes, not OAuth. The other packages call
// its helpers at a few points (a Check, a cache lookup, a mint, a Redis
// command, a broker request); each helper first asks Enabled, one atomic
// load, so with tracing off the hit path does no tracing work and allocates
// nothing. Span attributes are names, outcomes and numbers chosen here:
// never a token, a secret, or the value of a request header.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
)

// ScopeName is the instrumentation scope of tokenbroker's own spans.
const ScopeName = "github.com/tokenbroker/tokenbroker"

const (
	// maxQueuedSpans bounds the spans waiting for the exporter. A collector
	// that is down or slow must cost bounded memory, never a blocked Check:
	// past this, new spans are dropped (the SDK's batch processor never
	// blocks the caller).
	maxQueuedSpans = 2048
	// maxAttributeLen bounds every attribute value, so no value a caller can
	// influence (an IdP's error text, say) makes a span large.
	maxAttributeLen = 256
	// errorLogEvery is how often an exporter failure is logged at most: a
	// collector outage is one line a minute, not one per batch.
	errorLogEvery = time.Minute
)

// active is the tracer in force; nil while tracing is off.
var active atomic.Pointer[trace.Tracer]

// Enabled reports whether tracing is on. It is what every hook asks first.
func Enabled() bool { return active.Load() != nil }

// Tracer returns tokenbroker's tracer (a no-op tracer while tracing is off).
func Tracer() trace.Tracer {
	if t := active.Load(); t != nil {
		return *t
	}
	return noop.NewTracerProvider().Tracer(ScopeName)
}

// propagator reads and writes W3C traceparent/tracestate and B3 (Envoy's
// and Istio's default, single "b3" or multi "x-b3-*" header). When a request
// carries both, W3C wins (it is extracted last). Baggage is not read: it is
// caller-chosen data and spans here record nothing of the caller's.
var propagator = propagation.NewCompositeTextMapPropagator(
	b3.New(b3.WithInjectEncoding(b3.B3MultipleHeader|b3.B3SingleHeader)),
	propagation.TraceContext{},
)

// traceHeaders are the headers the propagators read. A request with none
// of them skips extraction, which costs allocations even when it finds
// nothing (B3's deferred sampling state).
var traceHeaders = []string{"traceparent", "b3", "x-b3-traceid", "x-b3-sampled", "x-b3-flags"}

// Extract returns ctx carrying the remote span context found in carrier, if any.
func Extract(ctx context.Context, carrier propagation.TextMapCarrier) context.Context {
	for _, h := range traceHeaders {
		if carrier.Get(h) != "" {
			return propagator.Extract(ctx, carrier)
		}
	}
	return ctx
}

// Inject writes ctx's span context into carrier (W3C and B3).
func Inject(ctx context.Context, carrier propagation.TextMapCarrier) {
	propagator.Inject(ctx, carrier)
}

// Tracing is a running tracer provider.
type Tracing struct {
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
}

// Start builds the exporter, sampler and resource s describes, makes them
// the process's tracer provider and propagator, and turns the hooks on.
// Exporting is asynchronous: an unreachable collector never slows a Check.
func Start(ctx context.Context, s Settings, log *zap.Logger) (*Tracing, error) {
	if log == nil {
		log = zap.NewNop()
	}
	exp, err := newExporter(ctx, s)
	if err != nil {
		return nil, err
	}
	res, err := newResource(ctx, s)
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, err
	}
	limits := sdktrace.NewSpanLimits()
	limits.AttributeValueLengthLimit = maxAttributeLen
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, sdktrace.WithMaxQueueSize(maxQueuedSpans)),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(linkedSampler{newSampler(s)}),
		sdktrace.WithSpanLimits(limits),
	)
	otel.SetErrorHandler(&quietErrors{log: log})
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagator)
	t := &Tracing{tp: tp, tracer: tp.Tracer(ScopeName)}
	active.Store(&t.tracer)
	log.Info("tracing on",
		zap.String("protocol", s.Protocol),
		zap.String("endpoint", endpointForLog(s)),
		zap.String("sampler", s.Sampler),
		zap.Float64("ratio", s.Ratio),
		zap.String("service_name", s.ServiceName))
	return t, nil
}

// Shutdown turns the hooks off and flushes what is queued, within ctx.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	active.CompareAndSwap(&t.tracer, nil)
	otel.SetTracerProvider(noop.NewTracerProvider())
	return t.tp.Shutdown(ctx)
}

// ForceFlush exports every finished span now (tests use it instead of waiting).
func (t *Tracing) ForceFlush(ctx context.Context) error { return t.tp.ForceFlush(ctx) }

func newExporter(ctx context.Context, s Settings) (sdktrace.SpanExporter, error) {
	switch s.Protocol {
	case "grpc":
		var opts []otlptracegrpc.Option
		if s.Endpoint != "" {
			opts = append(opts, otlptracegrpc.WithEndpointURL(s.Endpoint))
		}
		exp, err := otlptracegrpc.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("tracing: otlp grpc exporter: %w", err)
		}
		return exp, nil
	case "http/protobuf":
		var opts []otlptracehttp.Option
		if s.Endpoint != "" {
			// Like OTEL_EXPORTER_OTLP_ENDPOINT, tracing.endpoint is the base
			// URL: the signal's path is appended.
			opts = append(opts, otlptracehttp.WithEndpointURL(strings.TrimSuffix(s.Endpoint, "/")+"/v1/traces"))
		}
		exp, err := otlptracehttp.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("tracing: otlp http exporter: %w", err)
		}
		return exp, nil
	}
	return nil, fmt.Errorf("tracing: unsupported protocol %q", s.Protocol)
}

// newResource: service.name and the file's attributes first, then
// OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME, which win.
func newResource(ctx context.Context, s Settings) (*resource.Resource, error) {
	attrs := []attribute.KeyValue{attribute.String("service.name", DefaultServiceName)}
	for k, v := range s.Attributes {
		attrs = append(attrs, attribute.String(k, v))
	}
	if s.ServiceName != DefaultServiceName {
		attrs = append(attrs, attribute.String("service.name", s.ServiceName))
	}
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithAttributes(attrs...),
		resource.WithFromEnv(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	return res, nil
}

// endpointForLog names where spans go without any path or query.
func endpointForLog(s Settings) string {
	if s.EnvEndpoint {
		return "from OTEL_EXPORTER_OTLP_*ENDPOINT"
	}
	if s.Endpoint == "" {
		return "default (localhost)"
	}
	if i := strings.Index(s.Endpoint, "://"); i >= 0 {
		rest := s.Endpoint[i+3:]
		if j := strings.IndexAny(rest, "/?#"); j >= 0 {
			rest = rest[:j]
		}
		return s.Endpoint[:i+3] + rest
	}
	return s.Endpoint
}

// quietErrors logs the SDK's errors (a failed export, mostly) at most once
// per errorLogEvery, with how many it held back.
type quietErrors struct {
	log *zap.Logger

	mu         sync.Mutex // guards the fields below
	last       time.Time
	suppressed int
}

func (q *quietErrors) Handle(err error) {
	q.mu.Lock()
	now := time.Now()
	if !q.last.IsZero() && now.Sub(q.last) < errorLogEvery {
		q.suppressed++
		q.mu.Unlock()
		return
	}
	n := q.suppressed
	q.last, q.suppressed = now, 0
	q.mu.Unlock()
	q.log.Warn("tracing: exporting spans failed; Checks are unaffected, spans are dropped while it lasts",
		zap.Error(err), zap.Int("similar_errors_not_logged", n))
}
