package main

import (
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/tokenbroker/tokenbroker/internal/devidp"
)

// TestTracingFromEnvironment runs the binary with only OTEL_* variables
// (no tracing: section): a Check carrying a traceparent arrives at a real
// OTLP/HTTP receiver as a span of that trace, with the mint as its child,
// and without the client secret or the token.
func TestTracingFromEnvironment(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	var mu sync.Mutex
	var got []*collectortrace.ExportTraceServiceRequest
	var raw []byte
	arrived := make(chan struct{}, 1) // an export came in
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var m collectortrace.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || proto.Unmarshal(b, &m) != nil {
			http.Error(w, "bad export", http.StatusBadRequest)
			return
		}
		mu.Lock()
		got, raw = append(got, &m), append(raw, b...)
		mu.Unlock()
		select {
		case arrived <- struct{}{}:
		default:
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer rcv.Close()
	idp := devidp.New(devidp.Options{Clients: map[string]string{"svc-billing": "billing-secret-value"}})
	idpSrv := httptest.NewServer(idp)
	defer idpSrv.Close()
	cfg := write(t, "tb.yaml", `
listen:
  grpc: 127.0.0.1:0
  admin: 127.0.0.1:0
credentials:
  billing:
    token_url: `+idpSrv.URL+`/oauth/token
    client_id: svc-billing
    client_secret: billing-secret-value
routes:
  - host: billing.example.com
    credential: billing
`)
	p := startBinary(t, cfg, "OTEL_EXPORTER_OTLP_ENDPOINT="+rcv.URL, "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_TRACES_SAMPLER=always_on", "OTEL_SERVICE_NAME=egress-test", "OTEL_BSP_SCHEDULE_DELAY=50")
	conn := dial(t, p.grpcAddr)
	const trace = "0af7651916cd43dd8448eb211c80319c"
	resp, err := authv3.NewAuthorizationClient(conn).Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Host: "billing.example.com", Path: "/", Method: "GET",
			Headers: map[string]string{"traceparent": "00-" + trace + "-b7ad6b7169203331-01"}}}}})
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("Check: %v %v", resp, err)
	}
	token := strings.TrimPrefix(resp.GetOkResponse().GetHeaders()[0].GetHeader().GetValue(), "Bearer ")

	// The exporter sends every 50ms; wait for the Check and its mint (bounded).
	names := map[string]string{} // span name -> parent span id
	var service string
	timeout := time.After(30 * time.Second)
	for len(names) < 2 {
		select {
		case <-arrived:
		case <-timeout:
			t.Fatalf("no Check and mint spans exported: %v\n%s", names, p.logText())
		}
		mu.Lock()
		for _, req := range got {
			for _, rs := range req.ResourceSpans {
				for _, kv := range rs.GetResource().GetAttributes() {
					if kv.Key == "service.name" {
						service = kv.Value.GetStringValue()
					}
				}
				for _, ss := range rs.ScopeSpans {
					for _, s := range ss.Spans {
						if hex.EncodeToString(s.TraceId) == trace {
							names[s.Name] = hex.EncodeToString(s.ParentSpanId)
						}
					}
				}
			}
		}
		mu.Unlock()
	}
	if names["Check"] != "b7ad6b7169203331" || names["mint"] == "" {
		t.Fatalf("spans of the trace: %v (want Check with the caller as parent, and mint)\n%s", names, p.logText())
	}
	if service != "egress-test" {
		t.Errorf("service.name %q", service)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, secret := range []string{"billing-secret-value", token} {
		if strings.Contains(string(raw), secret) {
			t.Errorf("%q was exported", secret)
		}
	}
}
