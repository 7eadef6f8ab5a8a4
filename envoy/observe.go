package envoy

import (
	"cmp"
	"context"
	"net/http"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.opentelemetry.io/otel/propagation"

	"github.com/tokenbroker/tokenbroker/filter"
	"github.com/tokenbroker/tokenbroker/telemetry"
)

// What the servers tell tracing and the status page. Both Check paths are
// wrapped whole, so the span records the answer actually sent, however it
// was reached (a malformed request included).

// tracedCheck answers a Check inside a span that joins the trace named by
// the request's own headers (W3C traceparent/tracestate or B3, from either
// `headers` or `header_map`).
func (s *AuthorizationServer) tracedCheck(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	ctx = telemetry.Extract(ctx, checkHeaders{req.GetAttributes().GetRequest().GetHttp()})
	ctx, span := telemetry.StartCheck(ctx, filter.TransportGRPC)
	resp, err := s.check(ctx, req)
	if denied := resp.GetDeniedResponse(); denied != nil {
		telemetry.EndCheck(span, false, int(denied.GetStatus().GetCode()), resp.GetStatus().GetMessage())
	} else {
		telemetry.EndCheck(span, resp.GetOkResponse() != nil, http.StatusOK, "")
	}
	return resp, err
}

// checkHeaders reads a CheckRequest's headers for the propagators. Envoy
// sends header names lower-case, as the propagators ask for them.
type checkHeaders struct {
	h *authv3.AttributeContext_HttpRequest
}

func (c checkHeaders) Get(key string) string { return header(c.h, key) }
func (checkHeaders) Set(string, string)      {} // nothing is written back to Envoy
func (checkHeaders) Keys() []string          { return nil }

// tracedServe answers a forward-auth request inside a span joining the
// trace its headers carry.
func (f *ForwardAuth) tracedServe(w http.ResponseWriter, r *http.Request) {
	ctx := telemetry.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := telemetry.StartCheck(ctx, filter.TransportHTTP)
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	f.serve(sw, r.WithContext(ctx))
	var reason string
	if sw.status != http.StatusOK {
		reason = w.Header().Get(filter.ReasonHeader) // our own answer's reason, never a request header
	}
	telemetry.EndCheck(span, sw.status == http.StatusOK, sw.status, reason)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// header is one request header from either `headers` or `header_map`
// (names are lower-case), "" when absent. Only tracing reads headers
// beyond the pseudo-headers, and only when a Check is traced.
func header(h *authv3.AttributeContext_HttpRequest, name string) string {
	if v, ok := h.GetHeaders()[name]; ok {
		return v
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		if hv.GetKey() == name {
			return cmp.Or(hv.GetValue(), string(hv.GetRawValue()))
		}
	}
	return ""
}
