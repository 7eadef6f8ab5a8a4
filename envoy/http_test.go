package envoy_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/tokenbroker/tokenbroker/envoy"
	"github.com/tokenbroker/tokenbroker/filter"
)

// fwdReq builds a forward-auth request as a server would receive it.
func fwdReq(method, target, host string, hdr ...string) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	r.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	return r
}

func TestRequestFromHTTP(t *testing.T) {
	const tb = "127.0.0.1:9192" // Host of a request addressed to tokenbroker itself
	for _, tc := range []struct {
		name string
		r    *http.Request
		want filter.Request
		err  error
	}{
		{"envoy http_service", fwdReq("POST", "/envoy/v1/invoices?x=1", "billing.example.com",
			"X-Forwarded-Host", "evil.example.net", "X-Original-URI", "/other", "X-Forwarded-Method", "GET"),
			filter.Request{Host: "billing.example.com", Path: "/v1/invoices?x=1", Method: "POST"}, nil},
		{"envoy prefix alone", fwdReq("GET", "/envoy", "a.example.com"), filter.Request{Host: "a.example.com", Path: "/", Method: "GET"}, nil},
		{"envoy prefix and query", fwdReq("GET", "/envoy?q=1", "a.example.com"), filter.Request{Host: "a.example.com", Path: "/?q=1", Method: "GET"}, nil},
		{"not the envoy prefix", fwdReq("GET", "/envoyx/y", "a.example.com"), filter.Request{Host: "a.example.com", Path: "/envoyx/y", Method: "GET"}, nil},
		{"nginx auth_request", fwdReq("GET", "/nginx", "billing.example.com", "X-Original-URI", "/v1/x?y", "X-Original-Method", "POST"),
			filter.Request{Host: "billing.example.com", Path: "/v1/x?y", Method: "POST"}, nil},
		{"nginx with X-Forwarded-Host", fwdReq("GET", "/", tb, "X-Original-URI", "/v1", "X-Original-Method", "GET", "X-Forwarded-Host", "billing.example.com"),
			filter.Request{Host: "billing.example.com", Path: "/v1", Method: "GET"}, nil},
		{"caddy forward_auth", fwdReq("GET", "/check", "billing.example.com", "X-Forwarded-Method", "delete", "X-Forwarded-Uri", "/v1/a",
			"X-Forwarded-Host", "billing.example.com", "X-Forwarded-Proto", "https"),
			filter.Request{Host: "billing.example.com", Path: "/v1/a", Method: "DELETE"}, nil},
		{"traefik forwardAuth", fwdReq("GET", "/", tb, "X-Forwarded-Method", "PUT", "X-Forwarded-Uri", "/v1/b",
			"X-Forwarded-Host", "billing.example.com:8443", "X-Forwarded-Proto", "http"),
			filter.Request{Host: "billing.example.com:8443", Path: "/v1/b", Method: "PUT"}, nil},
		{"both uris agree", fwdReq("GET", "/", tb, "X-Forwarded-Uri", "/v1", "X-Original-URI", "/v1", "X-Forwarded-Host", "a.example.com"),
			filter.Request{Host: "a.example.com", Path: "/v1", Method: "GET"}, nil},
		{"smuggled X-Forwarded-Uri", fwdReq("GET", "/", "a.example.com", "X-Original-URI", "/v1", "X-Forwarded-Uri", "/admin"), filter.Request{}, envoy.ErrConflictingURI},
		{"smuggled X-Original-Method", fwdReq("GET", "/", tb, "X-Forwarded-Method", "POST", "X-Original-Method", "GET", "X-Forwarded-Uri", "/"), filter.Request{}, envoy.ErrConflictingMethod},
		{"repeated X-Forwarded-Host", fwdReq("GET", "/", tb, "X-Forwarded-Host", "a.example.com", "X-Forwarded-Host", "b.example.com"), filter.Request{}, envoy.ErrRepeatedHeader},
		{"repeated X-Original-URI", fwdReq("GET", "/", tb, "X-Original-URI", "/a", "X-Original-URI", "/a"), filter.Request{}, envoy.ErrRepeatedHeader},
		{"host list", fwdReq("GET", "/", tb, "X-Forwarded-Host", "a.example.com, b.example.com"), filter.Request{}, envoy.ErrBadHost},
		{"no host", fwdReq("GET", "/", ""), filter.Request{}, envoy.ErrNoHost},
		{"host with userinfo", fwdReq("GET", "/", tb, "X-Forwarded-Host", "a.example.com@b.example.com"), filter.Request{}, envoy.ErrBadHost},
		{"absolute uri", fwdReq("GET", "/", tb, "X-Original-URI", "http://b.example.com/v1"), filter.Request{}, envoy.ErrBadURI},
		{"control character", fwdReq("GET", "/", tb, "X-Original-URI", "/v1\x01"), filter.Request{}, envoy.ErrBadURI},
		{"bad method", fwdReq("GET", "/", tb, "X-Forwarded-Method", "GE T"), filter.Request{}, envoy.ErrBadMethod},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := envoy.RequestFromHTTP(tc.r, "/envoy")
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}

	// With the Envoy prefix off, a request under /envoy is read like any other.
	got, err := envoy.RequestFromHTTP(fwdReq("GET", "/envoy/v1", "a.example.com", "X-Original-URI", "/v2"), "")
	if err != nil || got.Path != "/v2" {
		t.Fatalf("prefix off: %+v %v", got, err)
	}
}

// httpCheck sends one forward-auth request to h.
func httpCheck(h http.Handler, r *http.Request) *http.Response {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

func TestForwardAuthAnswers(t *testing.T) {
	s := newStack(t, billingYAML)
	h := envoy.NewForwardAuth(s.cur, "/envoy", nil)

	// Allowed: 200, the header to inject, no body, never cached.
	resp := httpCheck(h, fwdReq("GET", "/nginx", "billing.example.com", "X-Original-URI", "/v1/invoices", "Authorization", "Bearer forged"))
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Authorization"), "Bearer devidp.") || len(body) != 0 {
		t.Fatalf("allowed: %d %v %q", resp.StatusCode, resp.Header, body)
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatal("token answer is cacheable")
	}
	tok := strings.TrimPrefix(resp.Header.Get("Authorization"), "Bearer ")

	// The same token through gRPC: one decider, one cache.
	if v := injected(t, must(s.client.Check(context.Background(), checkReq("billing.example.com", "/v1")))); v != "Bearer "+tok {
		t.Fatal("gRPC and HTTP handed out different tokens")
	}
	if s.idp.Mints() != 1 {
		t.Fatalf("mints = %d", s.idp.Mints())
	}

	for _, tc := range []struct {
		name   string
		r      *http.Request
		status int
		reason string
	}{
		{"no route", fwdReq("GET", "/envoy/v2", "billing.example.com"), 403, "no route"},
		{"other host", fwdReq("GET", "/", "127.0.0.1:9192", "X-Forwarded-Host", "evil.example.net", "X-Forwarded-Uri", "/v1"), 403, "no route"},
		{"conflict", fwdReq("GET", "/", "billing.example.com", "X-Original-URI", "/v2", "X-Forwarded-Uri", "/v1"), 403, envoy.ErrConflictingURI.Error()},
	} {
		resp := httpCheck(h, tc.r)
		body, _ := io.ReadAll(resp.Body)
		var j struct{ Reason string }
		if err := json.Unmarshal(body, &j); err != nil {
			t.Fatalf("%s: body %q: %v", tc.name, body, err)
		}
		if resp.StatusCode != tc.status || resp.Header.Get(filter.ReasonHeader) != tc.reason || j.Reason != tc.reason {
			t.Fatalf("%s: %d %q %q", tc.name, resp.StatusCode, resp.Header.Get(filter.ReasonHeader), body)
		}
		if resp.Header.Get("Authorization") != "" {
			t.Fatalf("%s: denial carries a token", tc.name)
		}
	}

	// No token obtainable: 503 with a reason and nothing secret.
	s2 := newStack(t, billingYAML)
	s2.idp.SetDown(http.StatusInternalServerError, "", "")
	resp = httpCheck(envoy.NewForwardAuth(s2.cur, "/envoy", nil), fwdReq("GET", "/envoy/v1", "billing.example.com"))
	body, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || resp.Header.Get(filter.ReasonHeader) != "token unavailable" {
		t.Fatalf("idp down: %d %v %q", resp.StatusCode, resp.Header, body)
	}
	if strings.Contains(string(body), secret) || strings.Contains(s2.logText(), secret) {
		t.Fatal("secret leaked")
	}
}

func TestForwardAuthPassThrough(t *testing.T) {
	s := newStack(t, strings.Replace(billingYAML, "default_action: deny", "default_action: allow", 1))
	resp := httpCheck(envoy.NewForwardAuth(s.cur, "/envoy", nil), fwdReq("GET", "/envoy/", "elsewhere.example.org"))
	if resp.StatusCode != 200 || resp.Header.Get("Authorization") != "" {
		t.Fatalf("pass-through: %d %v", resp.StatusCode, resp.Header)
	}
	if s.idp.Requests() != 0 {
		t.Fatal("pass-through asked the IdP")
	}
}

// TestForwardAuthOverLoopback drives the handler through a real HTTP server,
// HTTP/1.1 and cleartext HTTP/2 (what an Envoy http_service cluster may use),
// with concurrent cold requests minting once.
func TestForwardAuthOverLoopback(t *testing.T) {
	s := newStack(t, billingYAML)
	srv := httptest.NewUnstartedServer(envoy.NewForwardAuth(s.cur, "/envoy", nil))
	srv.Config = envoy.NewForwardAuthServer(srv.Config.Handler)
	srv.Start()
	defer srv.Close()

	h2 := &http.Client{Transport: &http.Transport{Protocols: new(http.Protocols)}}
	h2.Transport.(*http.Transport).Protocols.SetUnencryptedHTTP2(true)
	defer h2.CloseIdleConnections()
	for _, c := range []*http.Client{srv.Client(), h2} {
		const n = 50
		var wg sync.WaitGroup
		errs := make(chan string, n)
		for range n {
			wg.Go(func() {
				req, _ := http.NewRequest("PATCH", srv.URL+"/envoy/v1/x", nil)
				req.Host = "billing.example.com"
				resp, err := c.Do(req)
				if err != nil {
					errs <- err.Error()
					return
				}
				resp.Body.Close()
				if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Authorization"), "Bearer devidp.") {
					errs <- resp.Status
				}
			})
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Fatal(e)
		}
	}
	if s.idp.Mints() != 1 {
		t.Fatalf("mints = %d, want 1", s.idp.Mints())
	}
}

// BenchmarkForwardAuthHit measures the HTTP hit path in process: request
// parsing (nginx dialect), route match, cache hit, response headers.
func BenchmarkForwardAuthHit(b *testing.B) {
	h := envoy.NewForwardAuth(offlineDecider(b, fixedYAML), "/envoy", nil)
	r := fwdReq("GET", "/nginx", "billing.example.com", "X-Original-URI", "/v1/invoices", "X-Original-Method", "GET", "X-Forwarded-Host", "billing.example.com")
	w := &discardWriter{h: http.Header{}}
	h.ServeHTTP(w, r) // warm: the first request mints
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, r)
		if w.code != 200 {
			b.Fatal(w.code)
		}
	}
}

type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }

// TestForwardAuthRemoveHeaders: a route's remove_headers reach Envoy's
// http_service as x-envoy-auth-headers-to-remove, without the injected header.
func TestForwardAuthRemoveHeaders(t *testing.T) {
	s := newStack(t, `
credentials:
  billing:
    token_url: IDP/oauth/token
    client_id: svc-billing
    client_secret: ${BILLING_SECRET}
routes:
  - host: billing.example.com
    credential: billing
    remove_headers: [X-Api-Key, cookie]
  - host: plain.example.com
    credential: billing
`)
	h := envoy.NewForwardAuth(s.cur, "/envoy", nil)
	resp := httpCheck(h, fwdReq("GET", "/envoy/v1/invoices", "billing.example.com"))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := resp.Header.Get(envoy.HeadersToRemoveHeader); got != "x-api-key, cookie" {
		t.Fatalf("%s = %q", envoy.HeadersToRemoveHeader, got)
	}
	resp = httpCheck(h, fwdReq("GET", "/envoy/", "plain.example.com"))
	if _, ok := resp.Header[http.CanonicalHeaderKey(envoy.HeadersToRemoveHeader)]; ok || resp.StatusCode != 200 {
		t.Fatalf("route without remove_headers: %d %v", resp.StatusCode, resp.Header)
	}
}
