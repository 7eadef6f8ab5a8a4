package telemetry_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/telemetry"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestResolve(t *testing.T) {
	file := &config.Tracing{Endpoint: "http://file:4318", Protocol: "grpc", Sampler: "parentbased_traceidratio", SamplerArg: "0.5", ServiceName: "from-file"}
	for _, tc := range []struct {
		name string
		file *config.Tracing
		env  map[string]string
		on   bool
		want telemetry.Settings
		err  string
	}{
		{name: "neither set: off", env: map[string]string{"OTEL_SERVICE_NAME": "x"}},
		{name: "section present: on with spec defaults", file: &config.Tracing{}, on: true,
			want: telemetry.Settings{Protocol: "http/protobuf", Sampler: "parentbased_always_on", Ratio: 1, ServiceName: "tokenbroker"}},
		{name: "endpoint variable alone: on", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, on: true,
			want: telemetry.Settings{EnvEndpoint: true, Protocol: "http/protobuf", Sampler: "parentbased_always_on", Ratio: 1, ServiceName: "tokenbroker"}},
		{name: "file only", file: file, on: true,
			want: telemetry.Settings{Endpoint: "http://file:4318", Protocol: "grpc", Sampler: "parentbased_traceidratio", Ratio: 0.5, ServiceName: "from-file"}},
		{name: "environment wins", file: file, on: true, env: map[string]string{
			"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://env:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
			"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01", "OTEL_SERVICE_NAME": "from-env"},
			want: telemetry.Settings{EnvEndpoint: true, Protocol: "http/protobuf", Sampler: "traceidratio", Ratio: 0.01, ServiceName: "from-env"}},
		{name: "OTEL_SDK_DISABLED wins over the file", file: file, env: map[string]string{"OTEL_SDK_DISABLED": "true"}},
		{name: "tracing.disabled", file: &config.Tracing{Disabled: true}, env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}},
		{name: "OTEL_SDK_DISABLED=false wins over tracing.disabled", file: &config.Tracing{Disabled: true}, on: true, env: map[string]string{"OTEL_SDK_DISABLED": "false"},
			want: telemetry.Settings{Protocol: "http/protobuf", Sampler: "parentbased_always_on", Ratio: 1, ServiceName: "tokenbroker"}},
		{name: "exporter none", file: file, env: map[string]string{"OTEL_TRACES_EXPORTER": "none"}},
		{name: "other exporter", file: file, env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, err: "OTEL_TRACES_EXPORTER"},
		{name: "bad protocol", file: file, env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, err: "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{name: "bad sampler", file: file, env: map[string]string{"OTEL_TRACES_SAMPLER": "jaeger_remote"}, err: "OTEL_TRACES_SAMPLER"},
		{name: "bad ratio", file: file, env: map[string]string{"OTEL_TRACES_SAMPLER_ARG": "2"}, err: "OTEL_TRACES_SAMPLER_ARG"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, on, err := telemetry.Resolve(tc.file, env(tc.env))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one naming %s", err, tc.err)
				}
				return
			}
			if err != nil || on != tc.on {
				t.Fatalf("on=%v err=%v, want on=%v", on, err, tc.on)
			}
			got.Attributes = nil
			if on && !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("settings\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestResourceAndAttributeBound: service.name and the file's resource
// attributes are exported, OTEL_RESOURCE_ATTRIBUTES wins over the file,
// and no attribute value is longer than the bound (256).
func TestResourceAndAttributeBound(t *testing.T) {
	rcv, endpoint := startReceiver(t, "grpc")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=from-env")
	st, _, err := telemetry.Resolve(&config.Tracing{Endpoint: endpoint, Protocol: "grpc", ServiceName: "egress-a",
		ResourceAttributes: map[string]string{"deployment.environment": "from-file", "team": "platform"}}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := telemetry.Start(context.Background(), st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Shutdown(context.Background())
	_, sp := telemetry.Tracer().Start(context.Background(), "long")
	sp.SetAttributes(attribute.String("long", strings.Repeat("x", 10000)))
	sp.End()
	if err := tr.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	spans := rcv.spans()
	if len(spans) != 1 {
		t.Fatalf("%d spans", len(spans))
	}
	if n := len(spans[0].attr("long")); n != 256 {
		t.Errorf("attribute of %d bytes exported, want it cut to 256", n)
	}
	res := map[string]string{}
	for _, kv := range spans[0].resource {
		res[kv.Key] = anyString(kv.Value)
	}
	for k, v := range map[string]string{"service.name": "egress-a", "team": "platform", "deployment.environment": "from-env"} {
		if res[k] != v {
			t.Errorf("resource %s=%q, want %q (resource %v)", k, res[k], v, res)
		}
	}
}

// TestWrapHandler: a broker request joins its caller's trace and records
// the method and status, not the request's own headers or query.
func TestWrapHandler(t *testing.T) {
	if h := http.NotFoundHandler(); telemetry.WrapHandler("x", "/p", h) == nil {
		t.Fatal("nil handler while off")
	}
	rcv, endpoint := startReceiver(t, "http/protobuf")
	tr := startTracing(t, "http/protobuf", endpoint)
	h := telemetry.WrapHandler("broker token request", "/oauth/token", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusUnauthorized)
	}))
	req := httptest.NewRequest("POST", "/oauth/token?client_secret=query-secret-1", nil)
	req.Header.Set("traceparent", "00-"+parentTrace+"-"+parentSpan+"-01")
	req.Header.Set("User-Agent", "agent-value-2")
	h.ServeHTTP(httptest.NewRecorder(), req)
	if err := tr.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	spans := named(rcv.spans(), "broker token request")
	if len(spans) != 1 || spans[0].traceID() != parentTrace || spans[0].parentID() != parentSpan ||
		spans[0].attr("http.response.status_code") != "401" || spans[0].attr("http.request.method") != "POST" {
		t.Fatalf("broker span %+v", spans)
	}
	noSecrets(t, rcv.raw(), "query-secret-1", "agent-value-2")
}
