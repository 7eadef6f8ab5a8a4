package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestTracingSection(t *testing.T) {
	cfg, err := Parse("tb.yaml", []byte(`
tracing:
  endpoint: http://otel-collector:4317
  protocol: grpc
  sampler: parentbased_traceidratio
  sampler_arg: 0.01
  service_name: egress-billing
  resource_attributes: {deployment.environment: prod}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := &Tracing{Endpoint: "http://otel-collector:4317", Protocol: "grpc", Sampler: "parentbased_traceidratio",
		SamplerArg: "0.01", ServiceName: "egress-billing", ResourceAttributes: map[string]string{"deployment.environment": "prod"}}
	if !reflect.DeepEqual(cfg.Tracing, want) {
		t.Fatalf("tracing %+v", cfg.Tracing)
	}
	if cfg, err := Parse("tb.yaml", []byte("tracing:\n")); err != nil || cfg.Tracing == nil {
		t.Fatalf("an empty tracing: section must mean on with defaults: %v %v", cfg, err)
	}
	if cfg, err := Parse("tb.yaml", []byte("default_action: deny\n")); err != nil || cfg.Tracing != nil {
		t.Fatalf("no section must mean nil: %v", err)
	}
}

func TestTracingErrors(t *testing.T) {
	_, err := Parse("tb.yaml", []byte(`tracing:
  endpoint: collector:4317
  protocol: http/json
  sampler: jaeger_remote
  sampler_arg: "2"
  resource_attributes: {"": x}
  disabled: maybe
`))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"tb.yaml:2: tracing.endpoint: not an absolute http(s) URL",
		"tb.yaml:3: tracing.protocol: must be",
		"tb.yaml:4: tracing.sampler: must be one of",
		"tb.yaml:5: tracing.sampler_arg: must be a number from 0 to 1",
		"tb.yaml:6: tracing.resource_attributes",
		"tb.yaml:7: tracing.disabled: must be true or false",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, err)
		}
	}
}
