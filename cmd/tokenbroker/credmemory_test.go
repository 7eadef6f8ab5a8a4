package main

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"

	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/budget"
	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/filter"
	"github.com/tokenbroker/tokenbroker/status"
)

// BenchmarkConfiguredCredentialMemory builds what `serve` keeps for each of
// 100k configured client-credentials credentials and routes (the file
// bench/rss writes: one IdP, one scope, the default header and format):
// the token sources (buildSources), the filter and the status page. It
// reports the live heap each adds per credential after a GC, with the
// parsed configuration, whose strings they share, held in the baseline.
// No token is minted: the cache's per-key memory is BenchmarkKeyMemory's.
// One iteration is the whole build; run it with -benchtime 1x.
func BenchmarkConfiguredCredentialMemory(b *testing.B) {
	const n = 100_000
	var buf bytes.Buffer
	buf.WriteString("cache:\n  max_tokens: 100000\ncredentials:\n")
	for i := range n {
		fmt.Fprintf(&buf, "  c%d:\n    token_url: https://idp.example.com/oauth/token\n    client_id: client-%d\n    client_secret: secret-client-%d\n    scopes: [api:read]\n", i, i, i)
	}
	buf.WriteString("routes:\n")
	for i := range n {
		fmt.Fprintf(&buf, "  - host: svc%d.example.com\n    credential: c%d\n", i, i)
	}
	for b.Loop() {
		cfg, err := config.Parse("bench.yaml", buf.Bytes())
		if err != nil {
			b.Fatal(err)
		}
		tokens, err := cache.New(cache.Options{MaxTokens: n})
		if err != nil {
			b.Fatal(err)
		}
		base := heapAfterGC()
		sources, err := buildSources(cfg, zap.NewNop())
		if err != nil {
			b.Fatal(err)
		}
		afterSources := heapAfterGC()
		f, err := filter.New(cfg, sources, tokens, zap.NewNop(), filter.NewMetrics(nil))
		if err != nil {
			b.Fatal(err)
		}
		sources = nil // the filter holds them
		afterFilter := heapAfterGC()
		p := status.New(tokens, nil, budget.NewMeter(nil, nil, nil, nil), cfg.Credentials, f)
		p.SetRoutes(cfg.Routes)
		afterStatus := heapAfterGC()
		per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / n }
		b.ReportMetric(per(afterSources, base), "sources-B/cred")
		b.ReportMetric(per(afterFilter, afterSources), "filter-B/cred")
		b.ReportMetric(per(afterStatus, afterFilter), "status-B/cred")
		b.ReportMetric(per(afterStatus, base), "total-B/cred")
		runtime.KeepAlive(cfg)
		runtime.KeepAlive(f)
		runtime.KeepAlive(p)
		runtime.KeepAlive(sources)
		tokens.Close()
	}
}

func heapAfterGC() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
