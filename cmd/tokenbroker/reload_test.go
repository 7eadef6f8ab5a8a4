package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
)

// Secrets the dev IdP knows; none may ever appear in a log.
var idpClients = map[string]string{"svc-a": "secret-aaaa", "svc-b": "secret-bbbb", "svc-c": "secret-cccc"}

// cred renders one credential block for the dev IdP at idp.
func cred(name, idp string) string {
	return fmt.Sprintf("  %s:\n    token_url: %s/oauth/token\n    client_id: svc-%s\n    client_secret: %s\n", name, idp, name, idpClients["svc-"+name])
}

// tbConfig renders a configuration with the named credentials and routes
// given as "host[/prefix]=credential".
func tbConfig(idp string, creds []string, routes ...string) string {
	var b strings.Builder
	b.WriteString("listen:\n  grpc: 127.0.0.1:0\n  admin: 127.0.0.1:0\ncredentials:\n")
	for _, c := range creds {
		b.WriteString(cred(c, idp))
	}
	b.WriteString("routes:\n")
	for _, r := range routes {
		hp, c, _ := strings.Cut(r, "=")
		host, prefix, _ := strings.Cut(hp, "/")
		fmt.Fprintf(&b, "  - host: %q\n    credential: %s\n", host, c)
		if prefix != "" {
			fmt.Fprintf(&b, "    path_prefix: /%s\n", prefix)
		}
	}
	return b.String()
}

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// live is a tokenbroker started in process (the same start() serve uses)
// from a file, in front of the dev IdP, with a gRPC client.
type live struct {
	idp    *devidp.Server
	idpURL string
	path   string
	srv    *assembly
	client authv3.AuthorizationClient
	logs   *logBuffer
}

func startLive(t *testing.T, path string, idp *devidp.Server, idpURL string) *live {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	l := &live{idp: idp, idpURL: idpURL, path: path, logs: &logBuffer{}}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(l.logs), zapcore.DebugLevel))
	l.srv, err = start(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	conn := dial(t, l.srv.grpc.addr().String())
	t.Cleanup(func() {
		_ = conn.Close()
		l.srv.stop()
		if logs := l.logs.String(); leaksSecret(logs) {
			t.Errorf("a secret reached the logs:\n%s", logs)
		}
	})
	l.client = authv3.NewAuthorizationClient(conn)
	return l
}

func leaksSecret(s string) bool {
	for _, sec := range idpClients {
		if strings.Contains(s, sec) {
			return true
		}
	}
	return strings.Contains(s, "devidp.") // a token
}

func newIdP(t *testing.T) (*devidp.Server, string) {
	idp := devidp.New(devidp.Options{Clients: idpClients, Lifetime: time.Hour})
	srv := httptest.NewServer(idp)
	t.Cleanup(srv.Close)
	return idp, srv.URL
}

// replaceFile writes body next to path and renames it over path, as editors
// and config management tools do.
func replaceFile(t *testing.T, path, body string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func (l *live) check(t *testing.T, hostPath string) *authv3.CheckResponse {
	t.Helper()
	host, path, _ := strings.Cut(hostPath, "/")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := l.client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Host: host, Path: "/" + path, Method: "GET"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// outcome is "ok" or the denial reason.
func outcome(r *authv3.CheckResponse) string {
	if r.GetOkResponse() != nil && len(r.GetOkResponse().GetHeaders()) == 1 {
		return "ok"
	}
	for _, h := range r.GetDeniedResponse().GetHeaders() {
		return h.GetHeader().GetValue()
	}
	return fmt.Sprint(r)
}

func (l *live) metrics(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + l.srv.admin.addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestReloadAppliesChanges(t *testing.T) {
	idp, url := newIdP(t)
	path := write(t, "tb.yaml", tbConfig(url, []string{"a", "b"}, "a.example.com=a", "b.example.com=b"))
	l := startLive(t, path, idp, url)
	for _, hp := range []string{"a.example.com/v1", "b.example.com/"} {
		if got := outcome(l.check(t, hp)); got != "ok" {
			t.Fatalf("%s before reload: %s", hp, got)
		}
	}

	// Route a narrowed to /v2, credential b removed, credential c added.
	replaceFile(t, path, tbConfig(url, []string{"a", "c"}, "a.example.com/v2=a", "c.example.com=c"))
	if r, err := l.srv.reload(path, "test"); r != reloadApplied || err != nil {
		t.Fatalf("reload: %s %v\n%s", r, err, l.logs)
	}
	for hp, want := range map[string]string{
		"a.example.com/v1": "no route", // the changed route applies to the next Check
		"a.example.com/v2": "ok",
		"b.example.com/":   "no route",
		"c.example.com/":   "ok",
	} {
		if got := outcome(l.check(t, hp)); got != want {
			t.Errorf("%s after reload: %s, want %s", hp, got, want)
		}
	}
	if n := idp.MintsFor("svc-a"); n != 1 {
		t.Errorf("unchanged credential a minted %d times, want 1 (token kept across reload)", n)
	}
	m := l.metrics(t)
	if strings.Contains(m, `tokenbroker_token_expiry_seconds{credential="b"}`) {
		t.Error("removed credential b still has a cached token")
	}
	if !strings.Contains(m, `tokenbroker_config_reloads_total{result="applied"} 1`) {
		t.Errorf("reload not counted:\n%s", grep(m, "reloads_total"))
	}
	if !strings.Contains(l.logs.String(), `"tokens_dropped":["b"]`) {
		t.Errorf("drop not logged:\n%s", l.logs)
	}

	// b back: its token was dropped, so it is minted again.
	replaceFile(t, path, tbConfig(url, []string{"a", "b", "c"}, "a.example.com/v2=a", "b.example.com=b", "c.example.com=c"))
	if r, err := l.srv.reload(path, "test"); r != reloadApplied || err != nil {
		t.Fatalf("reload: %s %v", r, err)
	}
	if got := outcome(l.check(t, "b.example.com/")); got != "ok" {
		t.Fatalf("b after re-adding: %s", got)
	}
	if n := idp.MintsFor("svc-b"); n != 2 {
		t.Errorf("svc-b minted %d times, want 2 (dropped, then minted again)", n)
	}
	if n := idp.MintsFor("svc-a"); n != 1 {
		t.Errorf("svc-a minted %d times over two reloads, want 1", n)
	}
}

// TestReloadSecretRotationApplies: a reload that changes nothing but a
// client secret is a change (the assembly no longer keeps the parsed
// credentials, only a digest of them): it is applied, the cached token is
// kept (the identity leaves the secret out), and the next mint uses the new
// secret. So is a reload that changes one route and nothing else.
func TestReloadSecretRotationApplies(t *testing.T) {
	idp, url := newIdP(t)
	body := tbConfig(url, []string{"a"}, "a.example.com=a")
	path := write(t, "tb.yaml", body)
	l := startLive(t, path, idp, url)
	if got := outcome(l.check(t, "a.example.com/")); got != "ok" {
		t.Fatalf("before reload: %s", got)
	}
	if r, err := l.srv.reload(path, "test"); r != reloadUnchanged || err != nil {
		t.Fatalf("same file: %s %v", r, err)
	}

	// The IdP does not know this secret: a mint with it fails.
	replaceFile(t, path, strings.Replace(body, idpClients["svc-a"], "rotated-but-wrong", 1))
	if r, err := l.srv.reload(path, "test"); r != reloadApplied || err != nil {
		t.Fatalf("secret rotated: %s %v, want applied\n%s", r, err, l.logs)
	}
	if !strings.Contains(l.logs.String(), `"sections":["credentials"]`) {
		t.Errorf("the reload did not name credentials as changed:\n%s", l.logs)
	}
	if got := outcome(l.check(t, "a.example.com/")); got != "ok" {
		t.Errorf("after rotation: %s, want the cached token", got)
	}
	if n := idp.MintsFor("svc-a"); n != 1 {
		t.Errorf("svc-a minted %d times, want 1 (token kept: same identity)", n)
	}
	key, _ := l.srv.decisions.filter.Key("a")
	l.srv.tokens.Invalidate(key)
	if got := outcome(l.check(t, "a.example.com/")); got != "token unavailable" {
		t.Errorf("a mint after rotation: %s, want token unavailable (the new, wrong, secret sent)", got)
	}

	// A route alone changed is a change too.
	replaceFile(t, path, strings.Replace(tbConfig(url, []string{"a"}, "a.example.com/v2=a"), idpClients["svc-a"], "rotated-but-wrong", 1))
	if r, err := l.srv.reload(path, "test"); r != reloadApplied || err != nil {
		t.Fatalf("route changed: %s %v, want applied", r, err)
	}
	if !strings.Contains(l.logs.String(), `"sections":["routes"]`) {
		t.Errorf("the reload did not name routes as changed:\n%s", l.logs)
	}
	if got := outcome(l.check(t, "a.example.com/")); got != "no route" {
		t.Errorf("after the route change: %s, want no route", got)
	}
}

func TestReloadInvalidKeepsServing(t *testing.T) {
	idp, url := newIdP(t)
	good := tbConfig(url, []string{"a"}, "a.example.com=a")
	path := write(t, "tb.yaml", good)
	l := startLive(t, path, idp, url)
	if got := outcome(l.check(t, "a.example.com/")); got != "ok" {
		t.Fatal(got)
	}
	for name, body := range map[string]string{
		"invalid":     strings.Replace(good, "credential: a", "credential: missing", 1) + "default_action: maybe\n",
		"not yaml":    "credentials: [\n",
		"empty route": good + "  - host: \"\"\n    credential: a\n",
	} {
		replaceFile(t, path, body)
		r, err := l.srv.reload(path, "test")
		if r != reloadInvalid || err == nil {
			t.Fatalf("%s: reload %s %v", name, r, err)
		}
		if got := outcome(l.check(t, "a.example.com/")); got != "ok" {
			t.Fatalf("%s: old configuration stopped serving: %s", name, got)
		}
	}
	// The same FILE:LINE: field: problem lines as `tokenbroker validate`.
	logs := l.logs.String()
	for _, want := range []string{regexp.QuoteMeta(path) + `:\d+: routes\[0\]\.credential: credential \\"missing\\" is not defined`, regexp.QuoteMeta(path) + `:\d+: default_action`} {
		if !regexp.MustCompile(want).MatchString(logs) {
			t.Errorf("log lacks %s:\n%s", want, logs)
		}
	}
	if m := l.metrics(t); !strings.Contains(m, `tokenbroker_config_reloads_total{result="invalid"} 3`) {
		t.Errorf("invalid reloads not counted:\n%s", grep(m, "reloads_total"))
	}
	if n := idp.MintsFor("svc-a"); n != 1 {
		t.Errorf("mints %d, want 1", n)
	}
	// A missing file is an error, not a crash, and the old configuration stays.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if r, _ := l.srv.reload(path, "test"); r != reloadFailed {
		t.Fatalf("missing file: %s", r)
	}
	if got := outcome(l.check(t, "a.example.com/")); got != "ok" {
		t.Fatal(got)
	}
}

// TestReloadRestartNeeded: the one change a running process cannot make
// without refusing callers — another host on a listener's own port — keeps
// the running listener and says a restart applies it; the rest of the file
// (here a new cache size) applies.
func TestReloadRestartNeeded(t *testing.T) {
	idp, url := newIdP(t)
	body := tbConfig(url, []string{"a"}, "a.example.com=a")
	path := write(t, "tb.yaml", body)
	l := startLive(t, path, idp, url)
	port := l.srv.grpc.addr().(*net.TCPAddr).Port
	moved := strings.Replace(body, "grpc: 127.0.0.1:0", fmt.Sprintf("grpc: localhost:%d", port), 1)
	replaceFile(t, path, moved+"cache:\n  max_tokens: 5\n")
	if r, err := l.srv.reload(path, "test"); r != reloadApplied || err != nil {
		t.Fatalf("reload %s %v\n%s", r, err, l.logs)
	}
	if !regexp.MustCompile(`"fields":\["listen.grpc: localhost:\d+ shares its port with the running 127.0.0.1:0; kept until a restart"\]`).MatchString(l.logs.String()) {
		t.Fatalf("restart-needed warning missing:\n%s", l.logs)
	}
	if got := l.srv.tokens.Settings().MaxTokens; got != 5 {
		t.Errorf("cache.max_tokens in force %d, want 5", got)
	}
	if got := l.srv.config().Listen.GRPC; got != "127.0.0.1:0" {
		t.Errorf("listen.grpc in force %q, want the running 127.0.0.1:0", got)
	}
	if got := outcome(l.check(t, "a.example.com/")); got != "ok" {
		t.Fatal(got)
	}
	// The same file again: nothing to apply, the warning repeats.
	if r, err := l.srv.reload(path, "test"); r != reloadUnchanged || err != nil {
		t.Fatalf("second reload %s %v", r, err)
	}
	if n := strings.Count(l.logs.String(), "kept until a restart"); n != 2 {
		t.Errorf("warning logged %d times, want once per reload", n)
	}
}

// TestReloadUnderLoad swaps configurations while Checks run: none may fail,
// and the credential that stays the same is never minted again.
func TestReloadUnderLoad(t *testing.T) {
	idp, url := newIdP(t)
	cfgs := []string{
		tbConfig(url, []string{"a", "b"}, "a.example.com=a", "b.example.com=b"),
		tbConfig(url, []string{"a", "c"}, "c.example.com=c", "a.example.com=a", "*.example.org=c"),
	}
	path := write(t, "tb.yaml", cfgs[0])
	l := startLive(t, path, idp, url)

	const workers, perWorker, reloads = 8, 400, 20
	var failed, done atomic.Int64
	progress := make(chan struct{}, workers*perWorker) // one value per Check answered
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range perWorker { // bounded even if the reloads never finish
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				r, err := l.client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
					Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Host: "a.example.com", Path: "/x", Method: "GET"}},
				}})
				cancel()
				if err != nil || outcome(r) != "ok" {
					failed.Add(1)
				}
				done.Add(1)
				progress <- struct{}{}
			}
		})
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	// Each reload waits for a few Checks, so reloads and Checks interleave.
	awaitChecks := func(n int) {
		for range n {
			select {
			case <-progress:
			case <-allDone:
				return
			}
		}
	}
	applied := 0
	for i := range reloads {
		awaitChecks(10)
		replaceFile(t, path, cfgs[(i+1)%2])
		if r, err := l.srv.reload(path, "test"); err != nil {
			t.Errorf("reload %d: %s %v", i, r, err)
		} else if r == reloadApplied {
			applied++
		}
	}
	close(stop)
	<-allDone
	if failed.Load() != 0 {
		t.Fatalf("%d of %d Checks failed during %d reloads", failed.Load(), done.Load(), applied)
	}
	if applied != reloads {
		t.Fatalf("%d of %d reloads applied", applied, reloads)
	}
	if n := idp.MintsFor("svc-a"); n != 1 {
		t.Fatalf("credential a minted %d times across %d reloads, want 1", n, reloads)
	}
	t.Logf("%d Checks, 0 failed, across %d reloads", done.Load(), applied)
}

// TestReloadOnFileChange runs the watch loop: edits in place, rename-writes
// and the Kubernetes ConfigMap symlink swap all reload the configuration.
func TestReloadOnFileChange(t *testing.T) {
	idp, url := newIdP(t)
	v1 := tbConfig(url, []string{"a"}, "a.example.com=a")
	v2 := tbConfig(url, []string{"a", "c"}, "a.example.com=a", "c.example.com=c")

	// configMap lays out a directory the way the kubelet does: the file is a
	// link through ..data to a timestamped directory, and an update swaps
	// ..data atomically (rename of a new symlink over it).
	configMap := func(t *testing.T) (path string, update func(string)) {
		dir := t.TempDir()
		gen := 0
		put := func(body string) {
			gen++
			ts := fmt.Sprintf("..2026_11_25_00_00_%02d.%d", gen, gen)
			if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, ts, "tokenbroker.yaml"), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			tmp := filepath.Join(dir, "..data_tmp")
			if err := os.Symlink(ts, tmp); err != nil {
				t.Fatal(err)
			}
			old, _ := os.Readlink(filepath.Join(dir, "..data"))
			if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
				t.Fatal(err)
			}
			if old != "" {
				_ = os.RemoveAll(filepath.Join(dir, old))
			}
		}
		put(v1)
		if err := os.Symlink("..data/tokenbroker.yaml", filepath.Join(dir, "tokenbroker.yaml")); err != nil {
			t.Fatal(err)
		}
		return filepath.Join(dir, "tokenbroker.yaml"), put
	}
	plain := func(write func(path, body string)) func(t *testing.T) (string, func(string)) {
		return func(t *testing.T) (string, func(string)) {
			path := filepath.Join(t.TempDir(), "tokenbroker.yaml")
			if err := os.WriteFile(path, []byte(v1), 0o600); err != nil {
				t.Fatal(err)
			}
			return path, func(body string) { write(path, body) }
		}
	}
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) (string, func(string))
	}{
		{"rename-write", plain(func(path, body string) { replaceFile(t, path, body) })},
		{"write in place", plain(func(path, body string) {
			if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
				t.Error(err)
			}
		})},
		{"configmap symlink swap", configMap},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, update := tc.setup(t)
			cw, err := watchConfig(path)
			if err != nil {
				t.Fatal(err)
			}
			l := startLive(t, path, idp, url)
			results := make(chan string, 16)
			ctx, cancel := context.WithCancel(context.Background())
			loopDone := make(chan struct{})
			go func() {
				defer close(loopDone)
				l.srv.reloadLoop(ctx, path, cw, nil, func(trigger, result string) { results <- trigger + " " + result })
			}()
			t.Cleanup(func() { cancel(); <-loopDone })

			if got := outcome(l.check(t, "c.example.com/")); got != "no route" {
				t.Fatalf("before: %s", got)
			}
			update(v2)
			select {
			case r := <-results:
				if r != "file applied" {
					t.Fatalf("result %q\n%s", r, l.logs)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("change not seen\n%s", l.logs)
			}
			if got := outcome(l.check(t, "c.example.com/")); got != "ok" {
				t.Fatalf("after: %s", got)
			}
		})
	}
}

// TestServeSIGHUPReloads drives the built binary: SIGHUP reloads (and does
// not kill the process, SIGHUP's default), a secret rotated in its file is
// picked up by SIGHUP without a re-mint, and an edit of the file is picked
// up by the watch.
func TestServeSIGHUPReloads(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	idp, url := newIdP(t)
	secretFile := write(t, "a.secret", idpClients["svc-a"])
	body := func(extra string) string {
		return "listen:\n  grpc: 127.0.0.1:0\n  admin: 127.0.0.1:0\ncredentials:\n  a:\n    token_url: " + url +
			"/oauth/token\n    client_id: svc-a\n    client_secret_file: " + secretFile + "\n" + cred("c", url) +
			"routes:\n  - host: a.example.com\n    credential: a\n" + extra
	}
	path := write(t, "tb.yaml", body(""))
	p := startBinary(t, path)
	conn := dial(t, p.grpcAddr)
	l := &live{client: authv3.NewAuthorizationClient(conn)}
	if got := outcome(l.check(t, "a.example.com/")); got != "ok" {
		t.Fatal(got)
	}

	hup := func() {
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	hup()
	waitLog(t, p, "configuration unchanged", "sighup")

	// Rotate the secret (a file the watch does not cover): SIGHUP applies
	// it, and the token minted with the old secret stays in use.
	if err := os.WriteFile(secretFile, []byte("rotated-secret-value"), 0o600); err != nil {
		t.Fatal(err)
	}
	hup()
	waitLog(t, p, "configuration reloaded", "sighup")
	if got := outcome(l.check(t, "a.example.com/")); got != "ok" {
		t.Fatal(got)
	}
	if n := idp.MintsFor("svc-a"); n != 1 {
		t.Fatalf("mints after secret rotation %d, want 1", n)
	}

	replaceFile(t, path, body("  - host: c.example.com\n    credential: c\n"))
	waitLog(t, p, "configuration reloaded", "file")
	if got := outcome(l.check(t, "c.example.com/")); got != "ok" {
		t.Fatal(got)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-p.exited; err != nil {
		t.Fatalf("exit: %v\n%s", err, p.logText())
	}
	if logs := p.logText(); leaksSecret(logs) || strings.Contains(logs, "rotated-secret-value") {
		t.Fatalf("secret in logs:\n%s", logs)
	}
}

// waitLog waits for a log line with msg and trigger.
func waitLog(t *testing.T, p *process, msg, trigger string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case m := <-p.lines:
			if m["msg"] == msg && m["trigger"] == trigger {
				return
			}
		case <-timeout:
			t.Fatalf("no %q log line (trigger %s):\n%s", msg, trigger, p.logText())
		}
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestReloadInFlightCheckFinishesOnItsConfiguration: a Check waiting on the
// IdP when a reload removes its credential still gets its token; the next
// Check sees the new configuration.
func TestReloadInFlightCheckFinishesOnItsConfiguration(t *testing.T) {
	idp := devidp.New(devidp.Options{Clients: idpClients, Lifetime: time.Hour})
	arrived := make(chan struct{}, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		idp.ServeHTTP(w, r)
	}))
	defer srv.Close()
	path := write(t, "tb.yaml", tbConfig(srv.URL, []string{"a", "b"}, "a.example.com=a", "b.example.com=b"))
	l := startLive(t, path, idp, srv.URL)

	hang := make(chan struct{})
	idp.SetHang(hang)
	inFlight := make(chan string, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r, err := l.client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Host: "b.example.com", Path: "/", Method: "GET"}},
		}})
		if err != nil {
			inFlight <- err.Error()
			return
		}
		inFlight <- outcome(r)
	}()
	<-arrived // the Check is inside the IdP

	replaceFile(t, path, tbConfig(srv.URL, []string{"a"}, "a.example.com=a"))
	if r, err := l.srv.reload(path, "test"); r != reloadApplied || err != nil {
		t.Fatalf("reload %s %v", r, err)
	}
	idp.SetHang(nil)
	close(hang)
	if got := <-inFlight; got != "ok" {
		t.Fatalf("in-flight Check: %s", got)
	}
	if got := outcome(l.check(t, "b.example.com/")); got != "no route" {
		t.Fatalf("next Check: %s", got)
	}
}
