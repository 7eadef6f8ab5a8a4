package devidp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tokenbroker/tokenbroker/internal/devidp"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type answer struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

// post sends a token request; user != "" adds Basic credentials exactly as given. It may be
// called from any goroutine: failures are reported with t.Error and a zero answer.
func post(t *testing.T, srv *httptest.Server, form url.Values, user, pass string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/oauth/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Error(err)
		return answer{}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	return do(t, srv, req)
}

func do(t *testing.T, srv *httptest.Server, req *http.Request) answer {
	t.Helper()
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Error(err)
		return answer{}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Error(err)
		return answer{}
	}
	a := answer{status: res.StatusCode, header: res.Header, raw: string(b)}
	_ = json.Unmarshal(b, &a.body)
	return a
}

func newServer(t *testing.T, opts devidp.Options) (*devidp.Server, *httptest.Server) {
	t.Helper()
	if opts.Clients == nil {
		opts.Clients = map[string]string{"app": "app-secret", "we:ird%+ id": "s3:cr%et+ x"}
	}
	idp := devidp.New(opts)
	srv := httptest.NewServer(idp)
	t.Cleanup(srv.Close)
	return idp, srv
}

func TestTokenEndpoint(t *testing.T) {
	cc := url.Values{"grant_type": {"client_credentials"}}
	with := func(extra ...string) url.Values {
		f := url.Values{"grant_type": {"client_credentials"}}
		for i := 0; i+1 < len(extra); i += 2 {
			f.Set(extra[i], extra[i+1])
		}
		return f
	}
	tests := []struct {
		name       string
		form       url.Values
		user, pass string // Basic credentials, already form-urlencoded
		status     int
		code       string // expected "error"
	}{
		{"basic", cc, "app", "app-secret", 200, ""},
		{"basic urlencoded", cc, url.QueryEscape("we:ird%+ id"), url.QueryEscape("s3:cr%et+ x"), 200, ""},
		{"basic client_id in body too", with("client_id", "app"), "app", "app-secret", 200, ""},
		{"post", with("client_id", "app", "client_secret", "app-secret"), "", "", 200, ""},
		{"post with scope", with("client_id", "app", "client_secret", "app-secret", "scope", "a b"), "", "", 200, ""},
		{"basic wrong secret", cc, "app", "nope", 401, "invalid_client"},
		{"basic unknown client", cc, "who", "app-secret", 401, "invalid_client"},
		{"basic not urlencoded", cc, "app", "%zz", 401, "invalid_client"},
		{"post wrong secret", with("client_id", "app", "client_secret", "nope"), "", "", 401, "invalid_client"},
		{"post no secret", with("client_id", "app"), "", "", 401, "invalid_client"},
		{"no credentials", cc, "", "", 401, "invalid_client"},
		{"two methods", with("client_secret", "app-secret"), "app", "app-secret", 400, "invalid_request"},
		{"basic and different body client_id", with("client_id", "other"), "app", "app-secret", 400, "invalid_request"},
		{"no grant_type", url.Values{"client_id": {"app"}, "client_secret": {"app-secret"}}, "", "", 400, "invalid_request"},
		{"password grant", url.Values{"grant_type": {"password"}}, "app", "app-secret", 400, "unsupported_grant_type"},
		{"repeated parameter", url.Values{"grant_type": {"client_credentials"}, "scope": {"a", "b"}}, "app", "app-secret", 400, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, srv := newServer(t, devidp.Options{Lifetime: 90 * time.Second})
			a := post(t, srv, tt.form, tt.user, tt.pass)
			if a.status != tt.status {
				t.Fatalf("status %d, want %d; body %s", a.status, tt.status, a.raw)
			}
			if tt.status != 200 {
				if a.body["error"] != tt.code {
					t.Errorf("error %v, want %s", a.body["error"], tt.code)
				}
				if tt.status == 401 && a.header.Get("WWW-Authenticate") == "" {
					t.Error("401 without WWW-Authenticate")
				}
				if strings.Contains(a.raw, "app-secret") {
					t.Error("error body contains the secret")
				}
				return
			}
			tok, _ := a.body["access_token"].(string)
			if !strings.HasPrefix(tok, "devidp.") || len(tok) != len("devidp.")+43 {
				t.Errorf("access_token %q: want devidp.<43 base64url chars>", tok)
			}
			if a.body["token_type"] != "Bearer" || a.body["expires_in"] != 90.0 {
				t.Errorf("token_type %v expires_in %v", a.body["token_type"], a.body["expires_in"])
			}
			if got, want := a.body["scope"], tt.form.Get("scope"); want != "" && got != want {
				t.Errorf("scope %v, want %q", got, want)
			}
			if a.header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q", a.header.Get("Cache-Control"))
			}
		})
	}
}

func TestWrongContentTypeAndMethod(t *testing.T) {
	_, srv := newServer(t, devidp.Options{})
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/oauth/token", strings.NewReader(`{"grant_type":"client_credentials"}`))
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth("app", "app-secret")
	if a := do(t, srv, req); a.status != 400 || a.body["error"] != "invalid_request" {
		t.Errorf("JSON body: %d %s", a.status, a.raw)
	}
	req, _ = http.NewRequest(http.MethodGet, srv.URL+"/oauth/token", nil)
	if a := do(t, srv, req); a.status != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", a.status)
	}
}

func TestCountingStatsAndLastForm(t *testing.T) {
	var logMu sync.Mutex
	var logs []string
	idp, srv := newServer(t, devidp.Options{Logf: func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		logs = append(logs, fmt.Sprintf(format, args...))
	}})
	if idp.LastForm() != nil {
		t.Error("LastForm before any request is not nil")
	}

	const n = 8
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			post(t, srv, url.Values{"grant_type": {"client_credentials"}}, "app", "app-secret")
		})
	}
	wg.Wait()
	post(t, srv, url.Values{"grant_type": {"client_credentials"}}, "app", "wrong")
	a := post(t, srv, url.Values{
		"grant_type": {"client_credentials"}, "client_id": {"we:ird%+ id"}, "client_secret": {"s3:cr%et+ x"},
		"audience": {"https://api"},
	}, "", "")
	if a.status != 200 {
		t.Fatalf("post: %d %s", a.status, a.raw)
	}

	if got := idp.Mints(); got != n+1 {
		t.Errorf("Mints %d, want %d", got, n+1)
	}
	if got := idp.Requests(); got != n+2 {
		t.Errorf("Requests %d, want %d", got, n+2)
	}
	if got := idp.MintsFor("app"); got != n {
		t.Errorf("MintsFor(app) %d, want %d", got, n)
	}
	if got := idp.MintsFor("we:ird%+ id"); got != 1 {
		t.Errorf("MintsFor(weird) %d, want 1", got)
	}
	form := idp.LastForm()
	if form.Has("client_secret") || form.Get("audience") != "https://api" || form.Get("client_id") != "we:ird%+ id" {
		t.Errorf("LastForm %v", form)
	}
	form.Set("audience", "changed")
	if idp.LastForm().Get("audience") != "https://api" {
		t.Error("LastForm returned shared state")
	}

	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/stats", nil)
	st := do(t, srv, req)
	if st.status != 200 || st.body["mints"] != float64(n+1) || st.body["requests"] != float64(n+2) {
		t.Errorf("stats %d %s", st.status, st.raw)
	}
	if by, _ := st.body["by_client"].(map[string]any); by["app"] != float64(n) {
		t.Errorf("stats by_client %v", st.body["by_client"])
	}
	if strings.Contains(st.raw, "secret") || strings.Contains(st.raw, "devidp.") {
		t.Errorf("stats leak: %s", st.raw)
	}

	logMu.Lock()
	defer logMu.Unlock()
	if len(logs) != n+1 || !strings.HasPrefix(logs[n], "mint client=we:ird%+ id lifetime=1h0m0s total=") {
		t.Errorf("logs %q", logs)
	}
	for _, l := range logs {
		if strings.Contains(l, "devidp.") || strings.Contains(l, "secret") {
			t.Errorf("log line leaks: %q", l)
		}
	}
}

func TestSetLifetime(t *testing.T) {
	idp, srv := newServer(t, devidp.Options{})
	get := func() any {
		return post(t, srv, url.Values{"grant_type": {"client_credentials"}}, "app", "app-secret").body["expires_in"]
	}
	if got := get(); got != 3600.0 {
		t.Errorf("default expires_in %v", got)
	}
	idp.SetLifetime(2 * time.Minute)
	if got := get(); got != 120.0 {
		t.Errorf("after SetLifetime(2m) expires_in %v", got)
	}
	idp.SetLifetime(0)
	if got := get(); got != 3600.0 {
		t.Errorf("after SetLifetime(0) expires_in %v", got)
	}
}

func TestSetDown(t *testing.T) {
	idp, srv := newServer(t, devidp.Options{})
	form := url.Values{"grant_type": {"client_credentials"}}

	idp.SetDown(429, `{"error":"slow_down"}`, "7")
	a := post(t, srv, form, "app", "app-secret")
	if a.status != 429 || a.header.Get("Retry-After") != "7" || a.body["error"] != "slow_down" {
		t.Errorf("down 429: %d %q %s", a.status, a.header.Get("Retry-After"), a.raw)
	}
	idp.SetDown(502, "<html>bad gateway</html>", "")
	a = post(t, srv, form, "app", "app-secret")
	if a.status != 502 || a.raw != "<html>bad gateway</html>" || a.header.Get("Retry-After") != "" ||
		!strings.HasPrefix(a.header.Get("Content-Type"), "text/html") {
		t.Errorf("down 502: %d %v %q", a.status, a.header, a.raw)
	}
	if idp.Mints() != 0 || idp.Requests() != 2 {
		t.Errorf("while down: mints %d requests %d", idp.Mints(), idp.Requests())
	}

	idp.SetDown(0, "", "")
	if a := post(t, srv, form, "app", "app-secret"); a.status != 200 {
		t.Errorf("after recovery: %d %s", a.status, a.raw)
	}
	if idp.Mints() != 1 {
		t.Errorf("mints %d after recovery", idp.Mints())
	}
}

func TestSetHang(t *testing.T) {
	idp, srv := newServer(t, devidp.Options{})
	release := make(chan struct{})
	idp.SetHang(release)

	// A hung request whose context ends gets no answer.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/oauth/token",
		strings.NewReader("grant_type=client_credentials"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("app", "app-secret")
	errc := make(chan error, 1)
	go func() {
		res, err := srv.Client().Do(req)
		if err == nil {
			res.Body.Close()
		}
		errc <- err
	}()
	cancel()
	if err := <-errc; err == nil {
		t.Error("cancelled hung request got an answer")
	}

	// A hung request is answered normally once the channel is closed.
	done := make(chan answer, 1)
	go func() {
		done <- post(t, srv, url.Values{"grant_type": {"client_credentials"}}, "app", "app-secret")
	}()
	select {
	case a := <-done:
		t.Fatalf("request answered while hanging: %d", a.status)
	default:
	}
	close(release)
	if a := <-done; a.status != 200 {
		t.Errorf("released request: %d %s", a.status, a.raw)
	}

	idp.SetHang(nil)
	if a := post(t, srv, url.Values{"grant_type": {"client_credentials"}}, "app", "app-secret"); a.status != 200 {
		t.Errorf("after SetHang(nil): %d", a.status)
	}
}

func TestHealthz(t *testing.T) {
	_, srv := newServer(t, devidp.Options{})
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/healthz", nil)
	if a := do(t, srv, req); a.status != 200 {
		t.Errorf("healthz %d", a.status)
	}
}
