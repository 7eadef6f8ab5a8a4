package telemetry

import (
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// newSampler builds the OTEL_TRACES_SAMPLER sampler s names (Resolve has
// checked the name).
func newSampler(s Settings) sdktrace.Sampler {
	switch s.Sampler {
	case "always_on":
		return sdktrace.AlwaysSample()
	case "always_off":
		return sdktrace.NeverSample()
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(s.Ratio)
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample())
	case "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(s.Ratio))
	}
	return sdktrace.ParentBased(sdktrace.AlwaysSample())
}

// linkedSampler keeps a new root span whose links include a sampled span: a
// background refresh is its own trace, linked to the Check that started it,
// and when that Check was kept its refresh is kept too, whatever the ratio.
// Every other decision is the configured sampler's.
type linkedSampler struct{ base sdktrace.Sampler }

func (l linkedSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if !trace.SpanContextFromContext(p.ParentContext).IsValid() {
		for _, link := range p.Links {
			if link.SpanContext.IsSampled() {
				return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample}
			}
		}
	}
	return l.base.ShouldSample(p)
}

func (l linkedSampler) Description() string { return "LinkedSampler{" + l.base.Description() + "}" }
