package examples_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// echo is the upstream API: it records the Authorization of every request.
type echo struct {
	mu   sync.Mutex
	auth []string
}

func (e *echo) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	e.auth = append(e.auth, r.Header.Get("Authorization"))
	e.mu.Unlock()
	fmt.Fprintf(w, "%s %s\n", r.Method, r.URL.Path)
}

func (e *echo) seen() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.auth...)
}

// startNginx runs nginx with the shipped examples/nginx/tokenbroker.conf,
// pointed at tb (tokenbroker) and upstream, on a free loopback port.
func startNginx(t *testing.T, tb, upstream string) string {
	t.Helper()
	conf, err := os.ReadFile("nginx/tokenbroker.conf")
	if err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	site := string(conf)
	for old, repl := range map[string]string{
		"127.0.0.1:9192":              tb,
		"127.0.0.1:8080":              addr,
		"https://billing.example.com": upstream,
	} {
		if !strings.Contains(site, old) {
			t.Fatalf("tokenbroker.conf no longer mentions %s", old)
		}
		site = strings.ReplaceAll(site, old, repl)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "site.conf"), []byte(site), 0o644); err != nil {
		t.Fatal(err)
	}
	startNginxWith(t, dir)
	return addr
}

// startNginxWith runs nginx with dir as its prefix, serving dir/site.conf
// inside http { }, until the test ends.
func startNginxWith(t *testing.T, dir string) {
	t.Helper()
	bin := need(t, "nginx", "/usr/sbin/nginx")
	main := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log stderr notice;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %[1]s/client;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[1]s/site.conf;
}
`, dir)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	// The "start worker process" notice comes after the listeners are bound.
	startPeer(t, "start worker process", exec.Command(bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", "stderr"))
}

// TestNginxEndToEnd: client → nginx (auth_request) → tokenbroker HTTP →
// upstream, with the shipped nginx and tokenbroker configurations.
func TestNginxEndToEnd(t *testing.T) {
	b := startBroker(t, "nginx/tokenbroker.yaml")
	up := &echo{}
	upSrv := httptest.NewServer(up)
	defer upSrv.Close()
	proxy := startNginx(t, b.addr, upSrv.URL)
	// nginx's auth_request turns any status but 2xx/401/403 into 500.
	forwardAuthScenario(t, b, up, proxy, http.StatusInternalServerError)
	ambiguousPathScenario(t, up, proxy)
}

// TestNginxPassThroughDropsClientToken: with default_action allow,
// tokenbroker allows an unrouted request without a token, and the client's
// own Authorization must still not reach the upstream.
func TestNginxPassThroughDropsClientToken(t *testing.T) {
	b := startBroker(t, "nginx/tokenbroker.yaml", "default_action: deny", "default_action: allow")
	up := &echo{}
	upSrv := httptest.NewServer(up)
	defer upSrv.Close()
	passThroughScenario(t, up, startNginx(t, b.addr, upSrv.URL))
}

func passThroughScenario(t *testing.T, up *echo, proxy string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+proxy+"/public", nil)
	req.Host = "billing.example.com"
	req.Header.Set("Authorization", "Bearer forged")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("pass-through: %d", resp.StatusCode)
	}
	if seen := up.seen(); len(seen) != 1 || seen[0] != "" {
		t.Fatalf("upstream saw Authorization %q, want none", seen)
	}
}

// forwardAuthScenario drives a proxy in front of tokenbroker and the echo
// upstream: IdP down, a forged token replaced, denials that never reach the
// upstream, and 1,000 requests on one mint. idpDown is the status the proxy
// answers when tokenbroker says 503.
func forwardAuthScenario(t *testing.T, b *broker, up *echo, proxy string, idpDown int) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	defer client.CloseIdleConnections()
	get := func(method, host, path, auth string) (int, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+proxy+path, nil)
		req.Host = host
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		// Smuggling attempts a careless proxy configuration would let through.
		req.Header.Set("X-Forwarded-Host", "evil.example.net")
		req.Header.Set("X-Forwarded-Uri", "/v1/smuggled")
		req.Header.Set("X-Original-URI", "/v1/smuggled")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header
	}

	// IdP down before anything is cached: tokenbroker answers 503 and
	// nothing reaches the upstream.
	b.idp.SetDown(http.StatusServiceUnavailable, `{"error":"temporarily_unavailable"}`, "")
	if code, _ := get("GET", "billing.example.com", "/v1/x", ""); code != idpDown {
		t.Fatalf("IdP down: proxy answered %d, want %d", code, idpDown)
	}
	b.idp.SetDown(0, "", "")
	b.clock.Advance(2 * time.Minute) // past the mint back-off

	// The client's forged token is replaced by the minted one.
	if code, _ := get("POST", "billing.example.com", "/v1/invoices", "Bearer forged"); code != 200 {
		t.Fatalf("allowed request: %d", code)
	}
	seen := up.seen()
	if len(seen) != 1 || !strings.HasPrefix(seen[0], "Bearer devidp.") {
		t.Fatalf("upstream saw %q", seen)
	}
	token := seen[0]

	// Denied (no route for /admin, unknown host): 403 / 421, never upstream.
	code, h := get("GET", "billing.example.com", "/admin", "Bearer forged")
	if code != http.StatusForbidden || h.Get("X-Tokenbroker-Reason") != "no route" {
		t.Fatalf("denied request: %d reason %q", code, h.Get("X-Tokenbroker-Reason"))
	}
	if code, _ := get("GET", "evil.example.net", "/v1/x", "Bearer forged"); code != http.StatusMisdirectedRequest {
		t.Fatalf("unknown host: %d", code)
	}
	if n := len(up.seen()); n != 1 {
		t.Fatalf("a denied request reached the upstream (%d requests)", n)
	}

	// 1,000 requests, 8 at a time: one mint, the same token on every one.
	const n, workers = 1000, 8
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s/v1/items/%d", proxy, i), nil)
				req.Host = "billing.example.com"
				req.Header.Set("Authorization", "Bearer forged")
				resp, err := client.Do(req)
				if err != nil {
					errs <- err.Error()
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- resp.Status
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	seen = up.seen()
	if len(seen) != n+1 {
		t.Fatalf("upstream saw %d requests, want %d", len(seen), n+1)
	}
	for _, a := range seen {
		if a != token {
			t.Fatalf("upstream saw %q, want the one minted token", a)
		}
	}
	if got := b.idp.Mints(); got != 1 {
		t.Fatalf("IdP minted %d tokens for %d requests, want 1", got, n+1)
	}
}
