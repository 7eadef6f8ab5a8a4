// Command loadcompare measures tokenbroker's warm Check path against a bare
// ext_authz server (cmd/bareauthz) under the same ghz load, in the same run.
//
// It builds both binaries, starts the dev IdP in process, tokenbroker in
// front of it and bareauthz beside it, warms tokenbroker's cache with one
// Check, then runs several short paired rounds, alternating which server goes
// first, and prints throughput and p50/p99 latency of each and the ratios.
// On a shared machine absolute numbers drift from minute to minute; the
// ratios of back-to-back paired rounds are what to read, and their median
// and spread are printed.
//
//	go run ./bench/loadcompare -rounds 6 -duration 5s -concurrency 16
//
// ghz comes from $GHZ, ./bin/ghz or $PATH (bench/install-ghz.sh installs it).
// The whole run is bounded by -timeout; every process it starts is stopped.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/tokenbroker/tokenbroker/bench/internal/serveproc"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
)

const checkData = `{"attributes":{"request":{"http":{"host":"billing.example.com","path":"/v1/invoices","method":"GET","scheme":"https","headers":{":authority":"billing.example.com",":path":"/v1/invoices",":method":"GET","user-agent":"loadcompare"}}}}}`

const call = "envoy.service.auth.v3.Authorization.Check"

func main() {
	rounds := flag.Int("rounds", 6, "paired rounds (each runs both servers)")
	duration := flag.Duration("duration", 5*time.Second, "length of one ghz run")
	conc := flag.Int("concurrency", 16, "ghz concurrent workers")
	conns := flag.Int("connections", 1, "ghz gRPC connections")
	rate := flag.Int("rate", 0, "fixed request rate per second (0 = as fast as possible)")
	timeout := flag.Duration("timeout", 0, "bound on the whole run (default: derived from rounds and duration)")
	flag.Float64Var(&traceRatio, "trace-ratio", 0, "trace tokenbroker's Checks with this sampler ratio (e.g. 0.01) to an OTLP/HTTP receiver in this process (0 = tracing off)")
	flag.Parse()
	if *timeout == 0 {
		*timeout = time.Duration(*rounds)*2*(*duration+15*time.Second) + 3*time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx, *rounds, *duration, *conc, *conns, *rate); err != nil {
		fmt.Fprintln(os.Stderr, "loadcompare:", err)
		os.Exit(1)
	}
}

type result struct {
	RPS     float64
	P50     time.Duration
	P99     time.Duration
	Count   int64
	Errors  int64 // gRPC errors; denials are counted from tokenbroker's metrics
	Average time.Duration
}

// traceRatio is -trace-ratio.
var traceRatio float64

func run(ctx context.Context, rounds int, d time.Duration, conc, conns, rate int) error {
	ghz, err := findGhz()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "loadcompare")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	fmt.Printf("building tokenbroker and bareauthz …\n")
	for _, b := range []string{"tokenbroker", "bareauthz"} {
		out, err := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", filepath.Join(tmp, b), "./cmd/"+b).CombinedOutput()
		if err != nil {
			return fmt.Errorf("build %s: %v\n%s", b, err, out)
		}
	}

	// The IdP runs in this process: it is asked once, at warm-up.
	idp := devidp.New(devidp.Options{Clients: map[string]string{"svc-billing": "bench-secret"}, Lifetime: 24 * time.Hour})
	idpAddr, stopIdP, err := serveproc.IdP(idp)
	if err != nil {
		return err
	}
	defer stopIdP()

	cfg := filepath.Join(tmp, "tokenbroker.yaml")
	if err := os.WriteFile(cfg, []byte(`listen:
  grpc: 127.0.0.1:0
  admin: 127.0.0.1:0
credentials:
  billing:
    token_url: http://`+idpAddr+`/oauth/token
    client_id: svc-billing
    client_secret: bench-secret
routes:
  - host: billing.example.com
    path_prefix: /v1
    credential: billing
`), 0o600); err != nil {
		return err
	}
	var env []string
	var spans *spanSink
	if traceRatio > 0 {
		// A receiver that takes OTLP/HTTP and counts requests, so the
		// exporter's cost is real but the collector's is not measured.
		spans = &spanSink{}
		sl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		ss := &http.Server{Handler: spans, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = ss.Serve(sl) }()
		defer ss.Close()
		env = []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + sl.Addr().String(), "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
			"OTEL_TRACES_SAMPLER=parentbased_traceidratio", fmt.Sprintf("OTEL_TRACES_SAMPLER_ARG=%g", traceRatio)}
		fmt.Printf("tracing tokenbroker's Checks: ratio %g, OTLP/HTTP to %s\n", traceRatio, sl.Addr())
	}
	tb, err := startServerEnv(ctx, env, filepath.Join(tmp, "tokenbroker"), "serve", "--config", cfg, "--log-level", "info")
	if err != nil {
		return err
	}
	defer tb.stop()
	bare, err := startServer(ctx, filepath.Join(tmp, "bareauthz"), "--grpc", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer bare.stop()

	servers := []struct {
		name string
		addr string
	}{{"bareauthz", bare.addr}, {"tokenbroker", tb.addr}}
	// Warm-up: one short run each (tokenbroker mints its token here).
	for _, s := range servers {
		if _, err := runGhz(ctx, ghz, s.addr, time.Second, conc, conns, rate); err != nil {
			return fmt.Errorf("warm-up %s: %w", s.name, err)
		}
	}
	if n := idp.Mints(); n != 1 {
		return fmt.Errorf("tokenbroker minted %d tokens during warm-up, want 1", n)
	}

	fmt.Printf("machine: %s/%s, %d CPUs, %s; ghz -c %d --connections %d", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), cpuModel(), conc, conns)
	if rate > 0 {
		fmt.Printf(" -r %d", rate)
	}
	fmt.Printf(" -z %s, %d paired rounds, order alternating\n\n", d, rounds)
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "round\tserver\tChecks/s\tp50\tp99\terrors\t")
	var rpsRatio, p50Ratio, p99Ratio []float64
	var totals [2]result
	for r := range rounds {
		var res [2]result
		order := []int{0, 1}
		if r%2 == 1 {
			order = []int{1, 0}
		}
		for _, i := range order {
			res[i], err = runGhz(ctx, ghz, servers[i].addr, d, conc, conns, rate)
			if err != nil {
				return fmt.Errorf("round %d %s: %w", r+1, servers[i].name, err)
			}
			fmt.Fprintf(tw, "%d\t%s\t%.0f\t%s\t%s\t%d\t\n", r+1, servers[i].name, res[i].RPS, ms(res[i].P50), ms(res[i].P99), res[i].Errors)
			totals[i].Count += res[i].Count
			totals[i].Errors += res[i].Errors
		}
		rpsRatio = append(rpsRatio, res[1].RPS/res[0].RPS)
		p50Ratio = append(p50Ratio, float64(res[1].P50)/float64(res[0].P50))
		p99Ratio = append(p99Ratio, float64(res[1].P99)/float64(res[0].P99))
	}
	tw.Flush()
	fmt.Printf("\ntokenbroker ÷ bareauthz over %d paired rounds (median, min–max):\n", rounds)
	fmt.Printf("  throughput  %s   target ≥ 0.90  %s\n", spread(rpsRatio), verdict(median(rpsRatio) >= 0.90))
	fmt.Printf("  p50         %s\n", spread(p50Ratio))
	fmt.Printf("  p99         %s   target ≤ 1.30  %s\n", spread(p99Ratio), verdict(median(p99Ratio) <= 1.30))
	fmt.Printf("  errors      bareauthz %d of %d, tokenbroker %d of %d; IdP mints %d\n",
		totals[0].Errors, totals[0].Count, totals[1].Errors, totals[1].Count, idp.Mints())
	checks, err := checkResults(tb.admin)
	if err != nil {
		return err
	}
	fmt.Printf("  tokenbroker answers by result: %s\n", checks)
	if spans != nil {
		fmt.Printf("  OTLP export requests received: %d (%d bytes)\n", spans.requests.Load(), spans.bytes.Load())
	}
	if totals[1].Errors > 0 || totals[0].Errors > 0 || !onlyOK(checks) {
		return errors.New("some Checks failed")
	}
	return nil
}

// checkResults reads tokenbroker_checks_total from the admin listener, so
// denials (which are successful RPCs to ghz) are seen too.
func checkResults(admin string) (map[string]string, error) {
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if rest, ok := strings.CutPrefix(l, `tokenbroker_checks_total{result="`); ok {
			name, val, _ := strings.Cut(rest, `"} `)
			out[name] = val
		}
	}
	return out, sc.Err()
}

func onlyOK(m map[string]string) bool {
	for k, v := range m {
		if k != "ok" && v != "0" {
			return false
		}
	}
	return true
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/1e6) }

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func spread(v []float64) string {
	return fmt.Sprintf("%.3f (%.3f–%.3f)", median(v), slices.Min(v), slices.Max(v))
}

func findGhz() (string, error) {
	if p := os.Getenv("GHZ"); p != "" {
		return p, nil
	}
	if _, err := os.Stat("bin/ghz"); err == nil {
		return "bin/ghz", nil
	}
	if p, err := exec.LookPath("ghz"); err == nil {
		return p, nil
	}
	return "", errors.New("ghz not found: run bench/install-ghz.sh (or set GHZ)")
}

// server is a started binary and the gRPC address it reported.
type server struct {
	cmd   *exec.Cmd
	addr  string
	admin string // tokenbroker's admin listener, "" for bareauthz
	done  chan struct{}
}

func startServer(ctx context.Context, bin string, args ...string) (*server, error) {
	return startServerEnv(ctx, nil, bin, args...)
}

// startServerEnv is startServer with extra environment variables.
func startServerEnv(ctx context.Context, env []string, bin string, args ...string) (*server, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, done: make(chan struct{})}
	addr := make(chan map[string]any, 1)
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(stderr)
		var log bytes.Buffer
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "serving" {
				addr <- m
				continue
			}
			log.Write(sc.Bytes())
			log.WriteByte('\n')
		}
		close(addr)
		_ = cmd.Wait()
		if log.Len() > 0 {
			fmt.Fprintf(os.Stderr, "%s logged:\n%s", filepath.Base(bin), log.String())
		}
	}()
	select {
	case m, ok := <-addr:
		s.addr, _ = m["grpc"].(string)
		s.admin, _ = m["admin"].(string)
		if !ok || s.addr == "" {
			return nil, fmt.Errorf("%s exited before serving", filepath.Base(bin))
		}
		return s, nil
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("%s did not report serving within a minute", filepath.Base(bin))
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		return nil, ctx.Err()
	}
}

func (s *server) stop() {
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// ghzReport is the part of ghz's JSON report used here (durations in ns).
type ghzReport struct {
	Count        int64            `json:"count"`
	RPS          float64          `json:"rps"`
	Average      int64            `json:"average"`
	ErrorDist    map[string]int64 `json:"errorDistribution"`
	LatencyDistr []struct {
		Percentage int   `json:"percentage"`
		Latency    int64 `json:"latency"`
	} `json:"latencyDistribution"`
}

func runGhz(ctx context.Context, ghz, addr string, d time.Duration, conc, conns, rate int) (result, error) {
	args := []string{"--insecure", "--call", call, "-d", checkData,
		"-z", d.String(), "--duration-stop", "wait", "-c", fmt.Sprint(conc), "--connections", fmt.Sprint(conns),
		"-O", "json"}
	if rate > 0 {
		args = append(args, "-r", fmt.Sprint(rate))
	}
	// Bound one run: ghz itself stops after d, plus slack for slow starts.
	rctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(rctx, ghz, append(args, addr)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return result{}, fmt.Errorf("ghz: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	var rep ghzReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		return result{}, fmt.Errorf("ghz report: %w", err)
	}
	res := result{RPS: rep.RPS, Count: rep.Count, Average: time.Duration(rep.Average)}
	for _, n := range rep.ErrorDist {
		res.Errors += n
	}
	for _, l := range rep.LatencyDistr {
		switch l.Percentage {
		case 50:
			res.P50 = time.Duration(l.Latency)
		case 99:
			res.P99 = time.Duration(l.Latency)
		}
	}
	if res.P50 == 0 || res.P99 == 0 {
		return res, errors.New("ghz report has no latency distribution")
	}
	return res, nil
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// spanSink answers OTLP/HTTP export requests with an empty success and
// counts them.
type spanSink struct{ requests, bytes atomic.Int64 }

func (s *spanSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n, _ := io.Copy(io.Discard, r.Body)
	s.requests.Add(1)
	s.bytes.Add(n)
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(http.StatusOK) // an empty ExportTraceServiceResponse is zero bytes
}
