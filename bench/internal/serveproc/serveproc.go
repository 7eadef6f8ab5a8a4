// Package serveproc is what the memory benchmarks (bench/rss, bench/idlerss,
// bench/brokerrss) need of a real `tokenbroker serve` they start: starting
// it, its listeners' addresses from the log, and its RSS and CPU time from
// /proc, read from the outside the way `kubectl top` sees them; and, for
// them and bench/loadcompare, a loopback server for the harness's IdP.
package serveproc

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Serving reads the serve log r until the "serving" line and returns that
// line's fields (the listeners' addresses: "grpc", "admin", "broker", …).
// Lines before it go to before, lines after it to after (each may be nil);
// r is drained in the background so the child never blocks on its log.
func Serving(r io.Reader, before, after func(line string)) (map[string]any, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var last []string
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "serving" {
			go func() {
				for sc.Scan() {
					if after != nil {
						after(sc.Text())
					}
				}
			}()
			return m, nil
		}
		if before != nil {
			before(sc.Text())
		}
		last = append(last[max(len(last)-9, 0):], sc.Text())
	}
	return nil, fmt.Errorf("tokenbroker exited before serving; its last lines:\n%s", strings.Join(last, "\n"))
}

// Addr is the string field name of a "serving" line ("" when absent).
func Addr(serving map[string]any, name string) string {
	s, _ := serving[name].(string)
	return s
}

// MB reads one "kB" field of /proc/PID/status ("VmRSS:", "VmHWM:") in MB;
// -1 when it cannot be read.
func MB(pid int, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return -1
}

// CPUSeconds is the process's user + system CPU time from /proc/PID/stat;
// -1 when it cannot be read.
func CPUSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return -1
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

// GCTrace keeps the child's last runtime GC trace line (GODEBUG=gctrace=1),
// which says what its heap really held; Note is a Serving line func.
type GCTrace struct{ last atomic.Pointer[string] }

// Note keeps line when it is a GC trace line.
func (g *GCTrace) Note(line string) {
	if strings.HasPrefix(line, "gc ") {
		g.last.Store(&line)
	}
}

// Print writes the last GC line, if any, to w.
func (g *GCTrace) Print(w io.Writer) {
	if l := g.last.Load(); l != nil {
		fmt.Fprintf(w, "last GC of tokenbroker (heap before->after->live MB): %s\n", *l)
	}
}

// Runtime reads the Go runtime's memory gauges from the child's admin
// /metrics (client_golang's Go collector) and writes where its RSS goes
// beyond the live heap: in-use spans, free but unreleased pages, stacks and
// the runtime's own structures. Nothing is written when they cannot be read.
func Runtime(w io.Writer, adminAddr string) {
	if adminAddr == "" {
		return
	}
	resp, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		return
	}
	defer resp.Body.Close()
	want := []string{"go_memstats_heap_inuse_bytes", "go_memstats_heap_idle_bytes", "go_memstats_heap_released_bytes",
		"go_memstats_stack_inuse_bytes", "go_memstats_mspan_sys_bytes", "go_memstats_gc_sys_bytes",
		"go_memstats_other_sys_bytes", "go_memstats_next_gc_bytes"}
	got := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if ok && slices.Contains(want, name) {
			got[name], _ = strconv.ParseFloat(v, 64)
		}
	}
	if len(got) != len(want) {
		return
	}
	mb := func(n string) float64 { return got["go_memstats_"+n+"_bytes"] / (1 << 20) }
	fmt.Fprintf(w, "runtime (MB): heap in use %.0f, free not released %.0f, stacks %.0f, spans %.0f, GC metadata %.0f, other %.0f; next GC at %.0f\n",
		mb("heap_inuse"), mb("heap_idle")-mb("heap_released"), mb("stack_inuse"), mb("mspan_sys"), mb("gc_sys"), mb("other_sys"), mb("next_gc"))
}

// IdP serves h (the harness's IdP) on a loopback port until stop is called.
func IdP(h http.Handler) (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	return ln.Addr().String(), func() { _ = hs.Close() }, nil
}

// Proc is a `tokenbroker serve` started by Start.
type Proc struct {
	cmd     *exec.Cmd
	Pid     int
	Serving map[string]any // the fields of its "serving" line (see Serving)
}

// Start runs `bin serve --config cfg` with a JSON log at the default level
// (info), env added to the environment, and reads its log until it serves;
// before and after see the log's lines as in Serving. Stop ends it.
func Start(bin, cfg string, env []string, before, after func(line string)) (*Proc, error) {
	cmd := exec.Command(bin, "serve", "--config", cfg, "--log-format", "json", "--log-level", "info")
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{cmd: cmd, Pid: cmd.Process.Pid}
	if p.Serving, err = Serving(stderr, before, after); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// Stop kills the process and waits for it.
func (p *Proc) Stop() { _ = p.cmd.Process.Kill(); _ = p.cmd.Wait() }

// Minter is the memory benchmarks' IdP: it accepts every client whose secret
// is "secret-" + its id (HTTP Basic or form) and answers a distinct token of
// tokenBytes bytes (longer only when the count needs more), counting mints.
type Minter struct {
	Mints atomic.Int64
	pad   string
}

// NewMinter returns a Minter answering tokens of tokenBytes.
func NewMinter(tokenBytes int) *Minter { return &Minter{pad: strings.Repeat("t", tokenBytes)} }

func (p *Minter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, secret, ok := r.BasicAuth()
	if !ok {
		_ = r.ParseForm()
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if secret != "secret-"+id {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"error":"invalid_client"}`)
		return
	}
	tok := strconv.FormatInt(p.Mints.Add(1), 36) + "."
	tok += p.pad[:max(len(p.pad)-len(tok), 0)]
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 3600})
}
