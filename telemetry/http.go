package telemetry

import (
	"net/http"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// WrapHandler gives every request to h a server span named name, joined to
// the trace its headers carry, or returns h itself while tracing is off.
//
// otelhttp's handler is not used here: it records user_agent.original and
// an X-Forwarded-For client address, header values that tokenbroker's spans
// never hold. The span records the path pattern given, the method and the
// status, nothing of the request's own.
func WrapHandler(name, path string, h http.Handler) http.Handler {
	if !Enabled() {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := Tracer().Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(KeyBroker.String(path), methodKey.String(knownMethod(r.Method))))
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			span.SetAttributes(KeyStatus.Int(sw.status))
			span.End()
		}()
		h.ServeHTTP(sw, r.WithContext(ctx))
	})
}

const methodKey = attribute.Key("http.request.method")

// knownMethod is the method when it is a standard one, "_OTHER" otherwise
// (as the HTTP semantic conventions say), so a caller cannot write into a span.
func knownMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return "_OTHER"
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// InstrumentRedis adds go-redis's redisotel tracing hook to c while tracing
// is on: one span per command or pipeline, children of the Check or
// refresh in the command's context. Command arguments are not recorded
// (they hold sealed tokens and lock owners), nor the caller's source line.
func InstrumentRedis(c redis.UniversalClient) error {
	if !Enabled() {
		return nil
	}
	return redisotel.InstrumentTracing(c, redisotel.WithDBStatement(false), redisotel.WithCallerEnabled(false))
}
