// Command rss measures the memory of a real `tokenbroker serve` process
// holding N configured credentials and N routes, each with one cached
// token, the way `kubectl top` sees it: the resident set size of the
// process, read from /proc, with no forced GC.
//
//	go build -o /tmp/tokenbroker ./cmd/tokenbroker
//	go run ./bench/rss -bin /tmp/tokenbroker -n 100000 -token-bytes 64   # and 1024
//
// It writes a configuration with N client_credentials credentials (all at
// one token URL, as a fleet of one IdP's clients would be) and one route
// each, starts an IdP in this process that answers every client with a
// distinct token of -token-bytes, starts tokenbroker against it, and reads
// VmRSS when it is ready. Then it sends one ext_authz Check per route over
// gRPC (every one a mint; the run fails if one is not allowed or a route
// mints twice), reads VmRSS after the fill and once a second for -settle
// with no traffic (is idle RSS flat?), and finally VmHWM, the peak, which
// for this shape is set by loading the file.
//
// Tokens are sized like real access tokens: opaque ones are tens of bytes,
// Auth0 and Entra JWTs roughly 0.8–1.5 KB.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
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
	tokenBytes := flag.Int("token-bytes", 64, "size of each access token (opaque ~64, JWT ~1024)")
	limitMB := flag.Float64("limit-mb", 0, "steady RSS target; exit 1 above it (0: none)")
	workers := flag.Int("c", 16, "concurrent Checks")
	settle := flag.Duration("settle", 25*time.Second, "how long to watch RSS with no traffic after the fill")
	keep := flag.String("keep-config", "", "also write the generated configuration here")
	flag.Parse()
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "rss: -bin is required")
		os.Exit(2)
	}
	if err := run(*bin, *keep, *n, *tokenBytes, *workers, *settle, *limitMB); err != nil {
		fmt.Fprintln(os.Stderr, "rss:", err)
		os.Exit(1)
	}
}

// writeConfig writes the N-credential configuration; it is what a large
// fleet's generated file looks like: every credential names the same token
// URL, scope and (default) header and format.
func writeConfig(path, tokenURL string, n int) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	w := bufio.NewWriterSize(f, 1<<16)
	fmt.Fprintf(w, "listen:\n  grpc: 127.0.0.1:0\n  admin: 127.0.0.1:0\ncache:\n  max_tokens: %d\ncredentials:\n", max(n, 100_000))
	for i := range n {
		fmt.Fprintf(w, "  c%d:\n    token_url: %s\n    client_id: client-%d\n    client_secret: secret-client-%d\n    scopes: [api:read]\n", i, tokenURL, i, i)
	}
	w.WriteString("routes:\n")
	for i := range n {
		fmt.Fprintf(w, "  - host: svc%d.example.com\n    credential: c%d\n", i, i)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return 0, err
	}
	return st.Size(), f.Close()
}

func run(bin, keep string, n, tokenBytes, workers int, settle time.Duration, limitMB float64) error {
	ip := serveproc.NewMinter(tokenBytes)
	idpAddr, stopIdP, err := serveproc.IdP(ip)
	if err != nil {
		return err
	}
	defer stopIdP()

	dir, err := os.MkdirTemp("", "rss")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "tb.yaml")
	size, err := writeConfig(cfg, "http://"+idpAddr+"/oauth/token", n)
	if err != nil {
		return err
	}
	if keep != "" {
		if b, err := os.ReadFile(cfg); err == nil {
			_ = os.WriteFile(keep, b, 0o600)
		}
	}

	started := time.Now()
	var gc serveproc.GCTrace
	proc, err := serveproc.Start(bin, cfg, nil, gc.Note, gc.Note)
	if err != nil {
		return err
	}
	defer proc.Stop()
	pid, serving := proc.Pid, proc.Serving
	addr := serveproc.Addr(serving, "grpc")
	loaded := time.Since(started)
	ready := serveproc.MB(pid, "VmRSS:")
	readyPeak := serveproc.MB(pid, "VmHWM:")

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				res, err := client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
					Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
						Host: fmt.Sprintf("svc%d.example.com", i), Path: "/", Method: "GET",
					}},
				}})
				cancel()
				switch {
				case err != nil:
					errs <- fmt.Errorf("route %d: %w", i, err)
					return
				case res.GetOkResponse() == nil || len(res.GetOkResponse().GetHeaders()) == 0:
					errs <- fmt.Errorf("route %d: not allowed with a token (%v)", i, res.GetStatus())
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	fill := time.Since(start)
	if m := ip.Mints.Load(); m != int64(n) {
		return fmt.Errorf("%d mints for %d routes, want one each", m, n)
	}
	filled := serveproc.MB(pid, "VmRSS:")
	low, high, last := filled, filled, filled
	for deadline := time.Now().Add(settle); time.Now().Before(deadline); {
		time.Sleep(time.Second) // sampling a process from outside: there is nothing to wait on
		last = serveproc.MB(pid, "VmRSS:")
		low, high = min(low, last), max(high, last)
	}
	peak := serveproc.MB(pid, "VmHWM:")

	fmt.Printf("%d credentials and routes (a %.1f MB file), tokens of %d bytes: ready in %s, %d mints in %s\n",
		n, float64(size)/(1<<20), tokenBytes, loaded.Round(time.Millisecond), n, fill.Round(time.Millisecond))
	fmt.Printf("RSS of tokenbroker serve: %.0f MB ready (peak so far %.0f MB), %.0f MB after the fill\n", ready, readyPeak, filled)
	fmt.Printf("idle for %s: %.0f–%.0f MB, %.0f MB at the end (flat: %v)\n", settle, low, high, last, high-low < 0.1*low)
	fmt.Printf("steady %.0f MB, peak (VmHWM) %.0f MB = %.2f× steady\n", last, peak, peak/last)
	gc.Print(os.Stdout)
	serveproc.Runtime(os.Stdout, serveproc.Addr(serving, "admin"))
	if limitMB > 0 && last > limitMB {
		return fmt.Errorf("steady RSS %.0f MB over the %.0f MB target", last, limitMB)
	}
	return nil
}
