package examples_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// caddyBinary finds a Caddy new enough for forward_auth: the one
// .ci/install-deps builds with `go install` first, then one on PATH.
func caddyBinary(t *testing.T) string {
	t.Helper()
	gopath, _ := exec.Command("go", "env", "GOPATH").Output()
	bin := need(t, filepath.Join(strings.TrimSpace(string(gopath)), "bin", "caddy"))
	out, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil || !strings.Contains(string(out), "github.com/caddyserver/caddy/v2") || strings.Contains(string(out), "\tv2.6.") {
		t.Fatalf("%s is not a Caddy ≥ 2.7 built from source (go version -m: %v)", bin, err)
	}
	return bin
}

// startCaddy runs Caddy with the shipped examples/caddy/Caddyfile, pointed at
// tb (tokenbroker) and upstream, on a free loopback port.
func startCaddy(t *testing.T, tb, upstream string) string {
	t.Helper()
	bin := caddyBinary(t)
	conf, err := os.ReadFile("caddy/Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	site := string(conf)
	for old, repl := range map[string]string{
		"127.0.0.1:9192":              tb,
		":8080":                       ":" + portOf(addr),
		"https://billing.example.com": upstream,
	} {
		if !strings.Contains(site, old) {
			t.Fatalf("Caddyfile no longer mentions %s", old)
		}
		site = strings.ReplaceAll(site, old, repl)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(site), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--adapter", "caddyfile", "--config", file)
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	startPeer(t, "serving initial configuration", cmd)
	return addr
}

// TestCaddyEndToEnd: client → Caddy (forward_auth) → tokenbroker HTTP →
// upstream, with the shipped Caddyfile and tokenbroker configuration.
func TestCaddyEndToEnd(t *testing.T) {
	b := startBroker(t, "caddy/tokenbroker.yaml")
	up := &echo{}
	upSrv := httptest.NewServer(up)
	defer upSrv.Close()
	proxy := startCaddy(t, b.addr, upSrv.URL)
	// Caddy hands tokenbroker's denial back to the client as it is.
	forwardAuthScenario(t, b, up, proxy, http.StatusServiceUnavailable)
	ambiguousPathScenario(t, up, proxy)
}

// TestCaddyPassThroughDropsClientToken: see TestNginxPassThroughDropsClientToken.
func TestCaddyPassThroughDropsClientToken(t *testing.T) {
	b := startBroker(t, "caddy/tokenbroker.yaml", "default_action: deny", "default_action: allow")
	up := &echo{}
	upSrv := httptest.NewServer(up)
	defer upSrv.Close()
	passThroughScenario(t, up, startCaddy(t, b.addr, upSrv.URL))
}
