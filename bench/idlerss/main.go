// Command idlerss measures whether an idle `tokenbroker serve` holding N
// cached credentials stays flat: resident set size (from /proc, no forced
// GC, the way `kubectl top` sees it) and CPU time, sampled while nothing but
// the process's own periodic work (the status chart sampler) and a
// Prometheus-like scrape of /metrics happen.
//
//	go build -o /tmp/tokenbroker ./cmd/tokenbroker
//	go run ./bench/idlerss -bin /tmp/tokenbroker -n 100000 -idle 60s
//
// It starts an IdP in this process, a tokenbroker with N client_credentials
// credentials and N routes, fills every token with one Check each, then
// stays idle for -idle, reading RSS every -every and scraping /metrics every
// -scrape.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tokenbroker/tokenbroker/bench/internal/serveproc"
)

func main() {
	bin := flag.String("bin", "", "tokenbroker binary (go build -o BIN ./cmd/tokenbroker)")
	n := flag.Int("n", 100_000, "credentials, each with one route and one cached token")
	idle := flag.Duration("idle", time.Minute, "how long to watch the idle process")
	every := flag.Duration("every", 5*time.Second, "RSS sampling interval")
	scrape := flag.Duration("scrape", 15*time.Second, "GET /metrics interval while idle (0: none)")
	workers := flag.Int("c", 8, "concurrent Checks while filling")
	flag.Parse()
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "idlerss: -bin is required")
		os.Exit(2)
	}
	if err := run(*bin, *n, *workers, *idle, *every, *scrape); err != nil {
		fmt.Fprintln(os.Stderr, "idlerss:", err)
		os.Exit(1)
	}
}

const secret = "idle-secret"

// idp answers every request with the right secret with a 64-byte token.
type idp struct{ mints atomic.Int64 }

func (p *idp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, s, ok := r.BasicAuth()
	if !ok {
		_ = r.ParseForm()
		s = r.PostForm.Get("client_secret")
	}
	if s != secret {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	n := p.mints.Add(1)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": fmt.Sprintf("%064d", n), "token_type": "Bearer", "expires_in": 3600})
}

func run(bin string, n, workers int, idle, every, scrape time.Duration) error {
	ip := &idp{}
	idpAddr, stopIdP, err := serveproc.IdP(ip)
	if err != nil {
		return err
	}
	defer stopIdP()

	dir, err := os.MkdirTemp("", "idlerss")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var b strings.Builder
	fmt.Fprintf(&b, "listen:\n  grpc: 127.0.0.1:0\n  admin: 127.0.0.1:0\ncache:\n  max_tokens: %d\ncredentials:\n", max(n, 100_000))
	for i := range n {
		// Each credential its own client id, so each has its own identity and token.
		// Flow style keeps 100k of them under the 16 MiB configuration limit.
		fmt.Fprintf(&b, "  c%d: {token_url: \"http://%s/t\", client_id: c%d, client_secret: \"${S}\", cost_per_mint: 0.001}\n", i, idpAddr, i)
	}
	b.WriteString("routes:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - {host: c%d.x, credential: c%d}\n", i, i)
	}
	cfg := filepath.Join(dir, "tb.yaml")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
		return err
	}
	start := time.Now()
	proc, err := serveproc.Start(bin, cfg, []string{"S=" + secret}, func(line string) {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || m["level"] != "warn" && m["level"] != "info" {
			fmt.Fprintln(os.Stderr, line)
		}
	}, nil)
	if err != nil {
		return err
	}
	defer proc.Stop()
	grpcAddr, adminAddr := serveproc.Addr(proc.Serving, "grpc"), serveproc.Addr(proc.Serving, "admin")
	pid := proc.Pid
	fmt.Printf("%d credentials: serving after %s, RSS %.0f MB\n", n, time.Since(start).Round(time.Millisecond), serveproc.MB(pid, "VmRSS:"))

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	start = time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				resp, err := client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
					Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
						Host: fmt.Sprintf("c%d.x", i), Path: "/", Method: "GET"}},
				}})
				cancel()
				if err == nil && resp.GetOkResponse() == nil {
					err = fmt.Errorf("c%d denied: %v", i, resp.GetDeniedResponse())
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	fmt.Printf("filled %d tokens (%d mints) in %s\n", n, ip.mints.Load(), time.Since(start).Round(time.Millisecond))

	hc := &http.Client{Timeout: 30 * time.Second}
	get := func(path string) (int64, error) {
		res, err := hc.Get("http://" + adminAddr + path)
		if err != nil {
			return 0, err
		}
		defer res.Body.Close()
		return io.Copy(io.Discard, res.Body)
	}
	minted := ip.mints.Load()
	cpu0, rss0 := serveproc.CPUSeconds(pid), serveproc.MB(pid, "VmRSS:")
	lo, hi := rss0, rss0
	fmt.Printf("idle for %s (RSS every %s, /metrics every %s):\n  t=0s RSS %.0f MB\n", idle, every, scrape, rss0)
	t0 := time.Now()
	sample := time.NewTicker(every)
	defer sample.Stop()
	// Scrapes run beside the sampling: a slow one must not stop the RSS
	// readings (a scrape of 100k credentials took over 30 s before issue 13).
	var scraped, scrapeFailed atomic.Int64
	var slowest atomic.Int64 // ns
	done := make(chan struct{})
	var scrapers sync.WaitGroup
	if scrape > 0 {
		scrapers.Go(func() {
			st := time.NewTicker(scrape)
			defer st.Stop()
			for {
				select {
				case <-done:
					return
				case <-st.C:
				}
				begin := time.Now()
				nb, err := get("/metrics")
				if err != nil {
					scrapeFailed.Add(1)
					fmt.Printf("  scrape failed after %s: %v\n", time.Since(begin).Round(time.Millisecond), err)
					continue
				}
				scraped.Store(nb)
				if d := int64(time.Since(begin)); d > slowest.Load() {
					slowest.Store(d)
				}
			}
		})
	}
	for time.Since(t0) < idle {
		<-sample.C
		rss := serveproc.MB(pid, "VmRSS:")
		lo, hi = min(lo, rss), max(hi, rss)
		fmt.Printf("  t=%.0fs RSS %.0f MB\n", time.Since(t0).Seconds(), rss)
	}
	close(done)
	scrapers.Wait()
	cpu := serveproc.CPUSeconds(pid) - cpu0
	rss := serveproc.MB(pid, "VmRSS:")
	if again := ip.mints.Load() - minted; again != 0 {
		fmt.Printf("note: %d mints while idle\n", again)
	}
	fmt.Printf("idle %s: RSS %.0f → %.0f MB (min %.0f, max %.0f, growth %+.0f MB), CPU %.2f s (%.1f%% of one core), peak RSS %.0f MB\n",
		idle, rss0, rss, lo, hi, rss-rss0, cpu, 100*cpu/idle.Seconds(), serveproc.MB(pid, "VmHWM:"))
	fmt.Printf("scrapes: /metrics %d bytes, slowest %s, %d failed\n", scraped.Load(), time.Duration(slowest.Load()).Round(time.Millisecond), scrapeFailed.Load())
	return nil
}
