// Package examples_test checks every shipped example: Envoy bootstraps decode
// into go-control-plane's protos, tokenbroker configurations load, manifests
// cross-reference, and nginx (and Caddy when installed) run end to end.
package examples_test

import (
	"bufio"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
	"github.com/tokenbroker/tokenbroker/envoy"
	"github.com/tokenbroker/tokenbroker/filter"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/testcerts"
	"github.com/tokenbroker/tokenbroker/internal/testclock"
)

// clock is the shared manual clock for the clock seams.
type clock = testclock.Clock

// TestMain fails the package's tests if any goroutine outlives them, and
// removes the release the release test built, which would otherwise stay
// in the temporary folder after every run.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if dir := releaseDir.Load(); dir != nil {
			_ = os.RemoveAll(*dir)
		}
		os.Exit(code)
	}))
}

// broker is an in-process tokenbroker serving HTTP forward-auth on loopback
// from a shipped configuration, in front of a dev IdP that counts mints.
type broker struct {
	addr  string // forward-auth listener
	idp   *devidp.Server
	clock *clock
}

// Secrets the example configurations read from the environment.
const billingSecret = "billing-secret-never-logged"

// exampleEnv sets every ${VAR} the shipped tokenbroker configurations use.
func exampleEnv(t *testing.T, tokenURL string) {
	t.Setenv("IDP_TOKEN_URL", tokenURL)
	t.Setenv("BILLING_CLIENT_SECRET", billingSecret)
	t.Setenv("DEMO_CLIENT_SECRET", "demo-secret")
	t.Setenv("MAPS_API_KEY", "maps-key-never-logged")
	t.Setenv("TLS_DIR", exampleTLS(t, testcerts.NewCA(t, "envoy-ca")))
}

// exampleTLS writes the listen.tls files examples/envoy-sds reads from
// ${TLS_DIR}: a server certificate and the CA of client certificates.
func exampleTLS(t *testing.T, ca *testcerts.CA) string {
	t.Helper()
	dir := t.TempDir()
	ca.IssueFiles(t, dir, "tls", "tokenbroker", false)
	testcerts.Write(t, filepath.Join(dir, "envoy-ca.crt"), ca.PEM(), time.Now())
	return dir
}

// startBroker serves cfgPath, with each old→new pair of edits applied first.
func startBroker(t *testing.T, cfgPath string, edits ...string) *broker {
	t.Helper()
	if len(edits) > 0 {
		raw, err := os.ReadFile(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		s := string(raw)
		for i := 0; i+1 < len(edits); i += 2 {
			if !strings.Contains(s, edits[i]) {
				t.Fatalf("%s does not contain %q", cfgPath, edits[i])
			}
			s = strings.Replace(s, edits[i], edits[i+1], 1)
		}
		cfgPath = filepath.Join(t.TempDir(), filepath.Base(cfgPath))
		if err := os.WriteFile(cfgPath, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b := &broker{
		idp:   devidp.New(devidp.Options{Clients: map[string]string{"svc-billing": billingSecret}, Lifetime: time.Hour}),
		clock: testclock.New(time.Now()),
	}
	idpSrv := httptest.NewServer(b.idp)
	t.Cleanup(idpSrv.Close)
	exampleEnv(t, idpSrv.URL+"/oauth/token")
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := cache.New(cache.Options{
		ExpiryMargin: cfg.Cache.ExpiryMargin.D(),
		RefreshAhead: cfg.Cache.RefreshAhead,
		Now:          b.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tokens.Close)
	sources := map[string]credential.Source{}
	for name, c := range cfg.Credentials {
		cc, err := credential.NewClientCredentials(c, nil)
		if err != nil {
			t.Fatal(err)
		}
		cc.Now = b.clock.Now
		sources[name] = cc
	}
	f, err := filter.New(cfg, sources, tokens, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var cur envoy.Current
	cur.Store(f)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := envoy.NewForwardAuthServer(envoy.NewForwardAuth(&cur, cfg.ForwardAuth.EnvoyPathPrefix, nil))
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	b.addr = ln.Addr().String()
	return b
}

// freePort returns a loopback address nothing listens on right now, for
// peers (nginx, Caddy) whose configuration needs a fixed port.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// need finds a peer binary; missing, the test fails under CI and skips otherwise.
func need(t *testing.T, name string, extra ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, p := range extra {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed (.ci/install-deps installs it)", name)
	}
	t.Skipf("%s is not installed; run .ci/install-deps", name)
	return ""
}

// startPeer runs a peer process until the test ends, returning once a line
// containing ready appears on its stderr (or stdout).
func startPeer(t *testing.T, ready string, cmd *exec.Cmd) {
	t.Helper()
	name := cmd.Path
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	var (
		mu   sync.Mutex
		logs strings.Builder
	)
	up := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		seen := false
		for sc.Scan() {
			mu.Lock()
			logs.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if !seen && strings.Contains(sc.Text(), ready) {
				seen = true
				close(up)
			}
		}
		pr.Close()
	}()
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	select {
	case <-up:
	case <-exited:
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("%s exited before it was ready:\n%s", filepath.Base(name), logs.String())
	case <-time.After(60 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("%s not ready after 60s:\n%s", filepath.Base(name), logs.String())
	}
}
