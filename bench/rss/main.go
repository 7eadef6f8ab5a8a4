// Command rss measures the memory of tokenbroker holding N cached
// credentials: it parses a generated configuration with N credentials and N
// routes (the real loader), builds the real token sources, cache (with its
// Prometheus series) and filter, fills every token through Decide, and
// prints the process's resident set size.
//
//	go run ./bench/rss -n 100000 -token-bytes 1024
//
// Tokens come from a stand-in for the IdP call (the real ClientCredentials
// source is built and kept, so its memory counts) sized like real access
// tokens: Auth0 and Entra JWTs are roughly 0.8–1.5 KB.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
	"github.com/tokenbroker/tokenbroker/filter"
)

func main() {
	n := flag.Int("n", 100_000, "credentials (each with one route and one cached token)")
	tokenBytes := flag.Int("token-bytes", 1024, "size of each access token")
	limitMB := flag.Float64("limit-mb", 300, "RSS target; exit 1 above it")
	flag.StringVar(&memProfile, "memprofile", "", "write a heap profile here")
	flag.Parse()
	if err := run(*n, *tokenBytes, *limitMB); err != nil {
		fmt.Fprintln(os.Stderr, "rss:", err)
		os.Exit(1)
	}
}

// stub keeps the real source (its memory is part of the measurement) but
// answers without a network round trip.
type stub struct {
	real credential.Source
	name string
	pad  *string // shared; the token is built per call, as a real IdP answer is
}

func (s stub) Token(context.Context) (credential.Token, error) {
	now := time.Now()
	return credential.Token{Value: fmt.Sprintf("%-16s", s.name) + *s.pad, Type: "Bearer", Issued: now, Expiry: now.Add(time.Hour)}, nil
}

var memProfile string

func run(n, tokenBytes int, limitMB float64) error {
	base := rssMB()
	var y strings.Builder
	y.WriteString("credentials:\n")
	for i := range n {
		fmt.Fprintf(&y, "  c%d:\n    token_url: https://idp.example.com/oauth/token\n    client_id: client-%d\n    client_secret: secret-%d\n    scopes: [api:read]\n", i, i, i)
	}
	y.WriteString("routes:\n")
	for i := range n {
		fmt.Fprintf(&y, "  - host: svc%d.example.com\n    credential: c%d\n", i, i)
	}
	start := time.Now()
	cfg, err := config.Parse("generated.yaml", []byte(y.String()))
	if err != nil {
		return err
	}
	y.Reset()
	parsed := time.Since(start)

	reg := prometheus.NewRegistry()
	tokens, err := cache.New(cache.Options{
		MaxTokens:    cfg.Cache.MaxTokens,
		ExpiryMargin: cfg.Cache.ExpiryMargin.D(),
		RefreshAhead: cfg.Cache.RefreshAhead,
		Meter:        cache.NewMetrics(reg),
	})
	if err != nil {
		return err
	}
	defer tokens.Close()
	sources := make(map[string]credential.Source, n)
	pad := strings.Repeat("x", max(tokenBytes-16, 0))
	for name, c := range cfg.Credentials {
		src, err := credential.FromConfig(c, nil)
		if err != nil {
			return err
		}
		// Distinct tokens, no sharing; formatted at mint time as FromConfig's sources are.
		sources[name] = credential.WithFormat(stub{real: src, name: name, pad: &pad}, c.Format)
	}
	f, err := filter.New(cfg, sources, tokens, nil, filter.NewMetrics(reg))
	if err != nil {
		return err
	}
	ctx := context.Background()
	for i := range n {
		d := f.Decide(ctx, &filter.Request{Host: fmt.Sprintf("svc%d.example.com", i), Path: "/", Method: "GET"})
		if !d.Allowed {
			return fmt.Errorf("route %d: %s", i, d.Reason)
		}
	}
	tokens.Settle()
	filled := time.Since(start)
	runtime.GC()
	debug.FreeOSMemory() // RSS of what is live, not of garbage the runtime still holds
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss := rssMB()
	fmt.Printf("%d credentials, %d routes, %d cached tokens of %d bytes (config parsed in %s, all filled in %s)\n",
		n, len(cfg.Routes), n, tokenBytes, parsed.Round(time.Millisecond), filled.Round(time.Millisecond))
	fmt.Printf("RSS %.0f MB (process baseline %.0f MB), Go heap in use %.0f MB; target < %.0f MB: %s\n",
		rss, base, float64(ms.HeapInuse)/(1<<20), limitMB, map[bool]string{true: "met", false: "MISSED"}[rss < limitMB])
	fmt.Printf("peak RSS while loading %.0f MB (parsing the generated YAML and filling the cache; GOGC=100)\n", procStatusMB("VmHWM:"))
	if memProfile != "" {
		out, err := os.Create(memProfile)
		if err != nil {
			return err
		}
		if err := pprof.WriteHeapProfile(out); err != nil {
			return err
		}
		_ = out.Close()
	}
	runtime.KeepAlive(f)
	if rss >= limitMB {
		return fmt.Errorf("RSS %.0f MB over the %.0f MB target", rss, limitMB)
	}
	return nil
}

// rssMB reads VmRSS from /proc/self/status.
func rssMB() float64 { return procStatusMB("VmRSS:") }

// procStatusMB reads one "kB" field of /proc/self/status in MB.
func procStatusMB(field string) float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field); ok {
			var kb float64
			fmt.Sscanf(strings.TrimSpace(v), "%f", &kb)
			return kb / 1024
		}
	}
	return -1
}
