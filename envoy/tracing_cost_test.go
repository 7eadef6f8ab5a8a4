package envoy_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/telemetry"
)

// startTracingTo turns tracing on towards an OTLP/HTTP sink for the test.
func startTracingTo(tb testing.TB, url, ratio string) {
	st, on, err := telemetry.Resolve(&config.Tracing{Endpoint: url, Sampler: "parentbased_traceidratio", SamplerArg: ratio},
		func(string) string { return "" })
	if err != nil || !on {
		tb.Fatal(on, err)
	}
	tr, err := telemetry.Start(context.Background(), st, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tr.Shutdown(ctx)
	})
}

func otlpSink(tb testing.TB) string {
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	tb.Cleanup(sink.Close)
	return sink.URL
}

// TestCheckHitAllocationsTraced: with tracing on, a Check that is not
// sampled (most of them at 1%) stays within the hit path's budget too.
func TestCheckHitAllocationsTraced(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under -race")
	}
	startTracingTo(t, otlpSink(t), "0") // no root is sampled: the unsampled path exactly
	as, req := warmServer(t)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(200, func() { _, _ = as.Check(ctx, req) })
	if allocs > maxHitAllocs {
		t.Fatalf("unsampled traced Check allocates %.0f times, budget %d", allocs, maxHitAllocs)
	}
	t.Logf("unsampled traced Check: %.0f allocations (budget %d)", allocs, maxHitAllocs)
}

// BenchmarkCheckHitTraced is BenchmarkCheckHit with tracing on, at a 1%
// and a 100% sampler, exporting over OTLP/HTTP to a loopback receiver that
// accepts and discards. The Checks carry no traceparent, so the sampler's
// root decision applies (what an Envoy without tracing sends).
func BenchmarkCheckHitTraced(b *testing.B) {
	url := otlpSink(b)
	for _, ratio := range []string{"0.01", "1"} {
		b.Run("ratio="+ratio, func(b *testing.B) {
			startTracingTo(b, url, ratio)
			as, req := warmServer(b)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				resp, _ := as.Check(ctx, req)
				if resp.GetStatus().GetCode() != 0 {
					b.Fatal(resp.GetStatus())
				}
			}
		})
	}
}
