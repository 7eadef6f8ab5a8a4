// Command brokerrss measures the memory of a real `tokenbroker serve`
// process holding N broker clients, the way `kubectl top` would: the
// resident set size of the process, read from /proc, with no forced GC.
//
//	go build -o /tmp/tokenbroker ./cmd/tokenbroker
//	go run ./bench/brokerrss -bin /tmp/tokenbroker -n 100000 -token-bytes 1024
//
// It starts an IdP in this process that accepts every client whose secret
// is "secret-" + its id and answers tokens of -token-bytes, starts the
// broker in front of it, asks the broker listener once for each of N
// distinct clients' tokens (every one a mint), then once more (every one
// must come from the cache: the IdP's mint count must not move), and reads
// the broker's RSS over a few status-sampler intervals.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenbroker/tokenbroker/bench/internal/serveproc"
)

func main() {
	bin := flag.String("bin", "", "tokenbroker binary (go build -o BIN ./cmd/tokenbroker)")
	n := flag.Int("n", 100_000, "distinct broker clients, each with one cached token")
	tokenBytes := flag.Int("token-bytes", 20, "size of each access token (opaque ~20, JWT ~1024)")
	limitMB := flag.Float64("limit-mb", 0, "RSS target; exit 1 above it (0: none)")
	workers := flag.Int("c", 16, "concurrent requests")
	settle := flag.Duration("settle", 25*time.Second, "how long to watch RSS after the second pass")
	flag.Parse()
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "brokerrss: -bin is required")
		os.Exit(2)
	}
	if err := run(*bin, *n, *tokenBytes, *workers, *settle, *limitMB); err != nil {
		fmt.Fprintln(os.Stderr, "brokerrss:", err)
		os.Exit(1)
	}
}

func run(bin string, n, tokenBytes, workers int, settle time.Duration, limitMB float64) error {
	ip := serveproc.NewMinter(tokenBytes)
	idpAddr, stopIdP, err := serveproc.IdP(ip)
	if err != nil {
		return err
	}
	defer stopIdP()

	dir, err := os.MkdirTemp("", "brokerrss")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "tb.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`listen:
  grpc: 127.0.0.1:0
  admin: 127.0.0.1:0
  broker: 127.0.0.1:0
cache:
  max_tokens: %d
broker:
  upstreams:
    - name: idp
      token_url: http://%s/oauth/token
`, max(n, 100000), idpAddr)), 0o600); err != nil {
		return err
	}
	// One Info line per mint after serving; keep only the GC trace.
	var gc serveproc.GCTrace
	proc, err := serveproc.Start(bin, cfg, nil, func(line string) { fmt.Fprintln(os.Stderr, line) }, gc.Note)
	if err != nil {
		return err
	}
	defer proc.Stop()
	serving := proc.Serving
	addr := serveproc.Addr(serving, "broker")
	pid := proc.Pid
	base := serveproc.MB(pid, "VmRSS:")

	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}, Timeout: 30 * time.Second}
	pass := func() error {
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
					id := fmt.Sprintf("cust-%07d", i)
					res, err := hc.PostForm("http://"+addr+"/oauth/token", url.Values{
						"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {"secret-" + id},
					})
					if err != nil {
						errs <- err
						return
					}
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != 200 {
						errs <- fmt.Errorf("%s: status %d", id, res.StatusCode)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		return <-errs
	}
	start := time.Now()
	if err := pass(); err != nil {
		return fmt.Errorf("first pass: %w", err)
	}
	fill := time.Since(start)
	afterFill := serveproc.MB(pid, "VmRSS:")
	minted := ip.Mints.Load()
	start = time.Now()
	if err := pass(); err != nil {
		return fmt.Errorf("second pass: %w", err)
	}
	second := time.Since(start)
	if again := ip.Mints.Load() - minted; again != 0 {
		return fmt.Errorf("second pass minted %d tokens, want 0", again)
	}
	afterSecond := serveproc.MB(pid, "VmRSS:")
	steady := afterSecond
	for deadline := time.Now().Add(settle); time.Now().Before(deadline); {
		time.Sleep(time.Second) // sampling a process from outside: there is nothing to wait on
		steady = max(steady, serveproc.MB(pid, "VmRSS:"))
	}
	peak := serveproc.MB(pid, "VmHWM:")
	fmt.Printf("%d broker clients, tokens of %d bytes: %d mints in the first pass (%s), 0 in the second (%s)\n",
		n, tokenBytes, minted, fill.Round(time.Millisecond), second.Round(time.Millisecond))
	fmt.Printf("RSS of tokenbroker serve: %.0f MB at start, %.0f MB after the fill, %.0f MB after the second pass, %.0f MB max over the next %s, peak %.0f MB\n",
		base, afterFill, afterSecond, steady, settle, peak)
	fmt.Printf("per client: %.0f bytes (steady − start)\n", (steady-base)*(1<<20)/float64(n))
	gc.Print(os.Stdout)
	serveproc.Runtime(os.Stdout, serveproc.Addr(serving, "admin"))
	if limitMB > 0 && steady > limitMB {
		return fmt.Errorf("RSS %.0f MB over the %.0f MB target", steady, limitMB)
	}
	return nil
}
