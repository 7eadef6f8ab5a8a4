package config

import (
	"maps"
	"net/url"
	"slices"
	"strconv"
)

// Tracing mirrors the OpenTelemetry SDK's standard environment variables for
// people who prefer a file. Each OTEL_* variable that is set wins over its
// field here, so one image can be pointed at another collector per
// deployment. The section being present turns tracing on (unless disabled);
// without it, tracing is on only when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set.
type Tracing struct {
	// Endpoint is the collector's base URL (OTEL_EXPORTER_OTLP_ENDPOINT):
	// http://host:4318 for http/protobuf (the exporter adds /v1/traces),
	// http://host:4317 for grpc. An http:// URL means no TLS. Default:
	// localhost on the protocol's port, as the SDK does.
	Endpoint string `yaml:"endpoint"`
	// Protocol is OTEL_EXPORTER_OTLP_PROTOCOL: grpc or http/protobuf
	// (the specification's default).
	Protocol string `yaml:"protocol"`
	// Sampler and SamplerArg are OTEL_TRACES_SAMPLER and its _ARG:
	// always_on, always_off, traceidratio, parentbased_always_on (default),
	// parentbased_always_off, parentbased_traceidratio; the ratio is 0..1.
	Sampler    string `yaml:"sampler"`
	SamplerArg string `yaml:"sampler_arg"`
	// ServiceName is OTEL_SERVICE_NAME (default tokenbroker).
	ServiceName string `yaml:"service_name"`
	// ResourceAttributes are OTEL_RESOURCE_ATTRIBUTES as a mapping.
	ResourceAttributes map[string]string `yaml:"resource_attributes"`
	// Disabled is OTEL_SDK_DISABLED: true keeps tracing off.
	Disabled bool `yaml:"disabled"`
}

// Samplers are the OTEL_TRACES_SAMPLER values tokenbroker understands.
var Samplers = []string{"always_on", "always_off", "traceidratio",
	"parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"}

// TracingProtocols are the OTEL_EXPORTER_OTLP_PROTOCOL values supported.
var TracingProtocols = []string{"grpc", "http/protobuf"}

// RatioSampler reports whether sampler takes a ratio argument.
func RatioSampler(sampler string) bool {
	return sampler == "traceidratio" || sampler == "parentbased_traceidratio"
}

// ParseSamplerArg reads a ratio: a number from 0 to 1.
func ParseSamplerArg(s string) (float64, bool) {
	f, err := strconv.ParseFloat(s, 64)
	return f, err == nil && f >= 0 && f <= 1
}

// checkTracing validates the tracing section. Values are names and URLs of
// a collector, never secrets; the exporter's headers (which may hold an API
// key) are left to OTEL_EXPORTER_OTLP_HEADERS, read by the SDK.
func (d *decoder) checkTracing(t *Tracing) {
	if t == nil {
		return
	}
	if t.Endpoint != "" {
		u, err := url.Parse(t.Endpoint)
		d.check(err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.User == nil,
			"tracing.endpoint", "not an absolute http(s) URL without userinfo (e.g. http://otel-collector:4318)")
	}
	d.check(t.Protocol == "" || slices.Contains(TracingProtocols, t.Protocol), "tracing.protocol", `must be "grpc" or "http/protobuf"`)
	d.check(t.Sampler == "" || slices.Contains(Samplers, t.Sampler), "tracing.sampler",
		"must be one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio")
	if t.SamplerArg != "" {
		_, ok := ParseSamplerArg(t.SamplerArg)
		d.check(ok, "tracing.sampler_arg", "must be a number from 0 to 1")
		d.check(RatioSampler(t.Sampler), "tracing.sampler_arg", "only traceidratio and parentbased_traceidratio take an argument")
	}
	for _, k := range slices.Sorted(maps.Keys(t.ResourceAttributes)) {
		d.check(k != "", "tracing.resource_attributes", "attribute names must not be empty")
	}
}
