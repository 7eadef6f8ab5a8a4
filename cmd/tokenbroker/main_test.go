package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tokenbroker/tokenbroker/internal/devidp"
)

func write(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidate(t *testing.T) {
	good := write(t, "good.yaml", "credentials:\n  a:\n    token_url: https://idp.example.com/token\n    client_id: x\n    client_secret: y\nroutes:\n  - host: a.example.com\n    credential: a\n")
	var out, errb bytes.Buffer
	if code := run([]string{"validate", "--config", good}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	// The defaults hold fixed ports: moving those to another host is what a
	// reload cannot do; validate says so for this file.
	if want := good + ": every setting reloads without a restart but tracing (the tracer is built at start); restart-only: another host on the same port for listen.grpc (port 9191), listen.admin (port 9193)\n"; !strings.HasSuffix(out.String(), want) {
		t.Errorf("validate said %q, want it to end with %q", out.String(), want)
	}
	out.Reset()
	ephemeral := write(t, "ephemeral.yaml", "listen:\n  grpc: 127.0.0.1:0\n  admin: \"\"\n")
	if code := run([]string{"validate", "--config", ephemeral}, &out, &errb); code != 0 || !strings.HasSuffix(out.String(), ": every setting reloads without a restart but tracing (the tracer is built at start)\n") {
		t.Errorf("validate of a file without fixed ports: %d %q", code, out.String())
	}

	bad := write(t, "bad.yaml", "default_action: maybe\ncredentials:\n  a:\n    token_url: not a url\n    client_id: x\n    client_secret: hunter2-secret\n    colour: blue\nroutes:\n  - host: a.example.com\n    credential: b\n")
	out.Reset()
	errb.Reset()
	if code := run([]string{"validate", "--config", bad}, &out, &errb); code == 0 {
		t.Fatal("bad config accepted")
	}
	lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
	if len(lines) < 4 {
		t.Fatalf("want every problem reported, got:\n%s", errb.String())
	}
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(bad) + `:\d+: [a-z_.\[\]0-9]+: .+`)
	for _, l := range lines {
		if !re.MatchString(l) {
			t.Errorf("line %q is not FILE:LINE: field: problem", l)
		}
	}
	for _, want := range []string{bad + ":1: default_action", bad + ":4: credentials.a.token_url", bad + ":7: credentials.a.colour", bad + ":10: routes[0].credential"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("missing %q in:\n%s", want, errb.String())
		}
	}
	if strings.Contains(errb.String(), "hunter2") {
		t.Fatal("secret echoed")
	}
}

func TestVersionAndUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "tokenbroker ") {
		t.Fatalf("version: %d %q", code, out.String())
	}
	if code := run([]string{"frobnicate"}, &out, &errb); code != 2 {
		t.Fatalf("unknown command exit %d", code)
	}
	if code := run([]string{"serve", "--config", "x", "--log-format", "xml"}, &out, &errb); code != 2 {
		t.Fatalf("bad log format exit %d", code)
	}
}

// dial opens a plaintext gRPC connection to addr, closed when the test ends.
func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// buildBinary compiles the command once per test binary run, into
// builtDir (TestMain removes it).
var buildOnce = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "tokenbroker-bin")
	if err != nil {
		return "", err
	}
	builtDir.Store(&dir)
	bin := filepath.Join(dir, "tokenbroker")
	out, err := exec.Command("go", "build", "-race", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", &buildError{string(out)}
	}
	return bin, nil
})

// builtDir is the folder buildOnce made, if it ran.
var builtDir atomic.Pointer[string]

type buildError struct{ out string }

func (e *buildError) Error() string { return "go build: " + e.out }

// process is a running tokenbroker binary and what it logged.
type process struct {
	cmd       *exec.Cmd
	grpcAddr  string
	adminAddr string
	httpAddr  string
	logs      *bytes.Buffer
	mu        *sync.Mutex
	exited    chan error
	lines     chan map[string]any // every JSON log line, for waitLog; dropped when full
}

func startBinary(t *testing.T, cfgPath string, env ...string) *process {
	t.Helper()
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--config", cfgPath, "--log-format", "json")
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, logs: &bytes.Buffer{}, mu: &sync.Mutex{}, exited: make(chan error, 1), lines: make(chan map[string]any, 4096)}
	serving := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.logs.Write(sc.Bytes())
			p.logs.WriteByte('\n')
			p.mu.Unlock()
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "serving" {
				serving <- m
			}
			if m != nil {
				select {
				case p.lines <- m:
				default:
				}
			}
		}
		close(serving)
		p.exited <- cmd.Wait()
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	m, ok := <-serving
	if !ok {
		t.Fatalf("tokenbroker exited before serving:\n%s", p.logText())
	}
	p.grpcAddr, _ = m["grpc"].(string)
	p.adminAddr, _ = m["admin"].(string)
	p.httpAddr, _ = m["http"].(string)
	return p
}

func (p *process) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// TestServeGracefulShutdown runs the real binary: SIGTERM turns health
// NOT_SERVING, a Check already in flight still gets its token, and the
// process exits 0.
func TestServeGracefulShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	idp := devidp.New(devidp.Options{Clients: map[string]string{"svc": "secret-value"}})
	arrived := make(chan struct{}, 10)
	idpSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		idp.ServeHTTP(w, r)
	}))
	defer idpSrv.Close()
	cfg := write(t, "tb.yaml", `
listen:
  grpc: 127.0.0.1:0
  admin: 127.0.0.1:0
credentials:
  svc:
    token_url: `+idpSrv.URL+`/oauth/token
    client_id: svc
    client_secret: ${SVC_SECRET}
routes:
  - host: api.example.com
    credential: svc
`)
	p := startBinary(t, cfg, "SVC_SECRET=secret-value")

	resp, err := http.Get("http://" + p.adminAddr + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %v %v", resp, err)
	}
	resp.Body.Close()

	conn := dial(t, p.grpcAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(conn)
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watch, err := hc.Watch(watchCtx, &healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("initial health %v %v", r, err)
	}

	// A cold Check that hangs inside the IdP until we let it go.
	hang := make(chan struct{})
	idp.SetHang(hang)
	checkDone := make(chan *authv3.CheckResponse, 1)
	go func() {
		r, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Host: "api.example.com", Path: "/", Method: "GET"}},
		}})
		if err != nil {
			t.Error(err)
		}
		checkDone <- r
	}()
	<-arrived // the Check has reached the IdP

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health after SIGTERM: %v %v", r, err)
	}
	stopWatch()
	close(hang)
	r := <-checkDone
	if r.GetOkResponse() == nil || len(r.GetOkResponse().GetHeaders()) != 1 {
		t.Fatalf("in-flight Check did not finish OK: %v", r)
	}
	select {
	case err := <-p.exited:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, p.logText())
		}
	case <-ctx.Done():
		t.Fatal("did not exit")
	}
	if strings.Contains(p.logText(), "secret-value") {
		t.Fatal("secret in logs")
	}
}
