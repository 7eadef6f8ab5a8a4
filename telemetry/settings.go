package telemetry

import (
	"cmp"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"

	"github.com/tokenbroker/tokenbroker/config"
)

// Settings say where spans go and which are kept, resolved from the OTEL_*
// environment variables and the tracing: section (the environment wins).
type Settings struct {
	// Endpoint is the collector's base URL; "" leaves the exporter to its
	// own environment variables and defaults.
	Endpoint string
	// EnvEndpoint is set when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is: the
	// exporter reads it itself (with its own per-signal rules).
	EnvEndpoint bool
	Protocol    string // grpc | http/protobuf
	Sampler     string
	Ratio       float64 // for the ratio samplers
	ServiceName string
	Attributes  map[string]string // resource attributes from the file; OTEL_RESOURCE_ATTRIBUTES is read by the SDK
}

// The environment variables Resolve reads, as the OpenTelemetry
// specification names them.
const (
	envDisabled      = "OTEL_SDK_DISABLED"
	envEndpoint      = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envTraceEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	envProtocol      = "OTEL_EXPORTER_OTLP_PROTOCOL"
	envTraceProtocol = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	envExporter      = "OTEL_TRACES_EXPORTER"
	envSampler       = "OTEL_TRACES_SAMPLER"
	envSamplerArg    = "OTEL_TRACES_SAMPLER_ARG"
	envServiceName   = "OTEL_SERVICE_NAME"
)

// DefaultServiceName is service.name unless OTEL_SERVICE_NAME or
// tracing.service_name says otherwise.
const DefaultServiceName = "tokenbroker"

// Resolve decides whether tracing is on and with what settings. Tracing is
// on when the tracing: section is present or an OTLP endpoint variable is
// set, and off whenever OTEL_SDK_DISABLED=true, tracing.disabled (unless
// OTEL_SDK_DISABLED=false) or OTEL_TRACES_EXPORTER=none says so. getenv is
// os.Getenv outside tests. Errors name the variable, never its value.
func Resolve(t *config.Tracing, getenv func(string) string) (Settings, bool, error) {
	var file config.Tracing
	if t != nil {
		file = *t
	}
	disabled := file.Disabled
	switch strings.ToLower(strings.TrimSpace(getenv(envDisabled))) {
	case "true":
		disabled = true
	case "false":
		disabled = false
	}
	envEP := getenv(envTraceEndpoint) != "" || getenv(envEndpoint) != ""
	if disabled || t == nil && !envEP || strings.TrimSpace(getenv(envExporter)) == "none" {
		return Settings{}, false, nil
	}
	if e := strings.TrimSpace(getenv(envExporter)); e != "" && e != "otlp" {
		return Settings{}, false, fmt.Errorf("%s: only otlp (or none) is supported", envExporter)
	}
	s := Settings{
		Endpoint:    file.Endpoint,
		EnvEndpoint: envEP,
		Protocol:    cmp.Or(getenv(envTraceProtocol), getenv(envProtocol), file.Protocol, "http/protobuf"),
		Sampler:     cmp.Or(strings.ToLower(strings.TrimSpace(getenv(envSampler))), file.Sampler, "parentbased_always_on"),
		ServiceName: cmp.Or(getenv(envServiceName), file.ServiceName, DefaultServiceName),
		Attributes:  maps.Clone(file.ResourceAttributes),
		Ratio:       1,
	}
	if envEP {
		s.Endpoint = ""
	}
	if !slices.Contains(config.TracingProtocols, s.Protocol) {
		return Settings{}, false, fmt.Errorf("%s: must be grpc or http/protobuf", envProtocol)
	}
	if !slices.Contains(config.Samplers, s.Sampler) {
		return Settings{}, false, fmt.Errorf("%s: unsupported sampler (supported: %s)", envSampler, strings.Join(config.Samplers, ", "))
	}
	if config.RatioSampler(s.Sampler) {
		arg := cmp.Or(getenv(envSamplerArg), file.SamplerArg)
		if arg != "" {
			r, ok := config.ParseSamplerArg(arg)
			if !ok {
				return Settings{}, false, fmt.Errorf("%s: must be a number from 0 to 1", envSamplerArg)
			}
			s.Ratio = r
		}
	}
	if s.Endpoint != "" {
		if u, err := url.Parse(s.Endpoint); err != nil || u.Host == "" {
			return Settings{}, false, fmt.Errorf("tracing.endpoint: not an absolute URL")
		}
	}
	return s, true, nil
}
