package envoy_test

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/envoy"
	"github.com/tokenbroker/tokenbroker/filter"
)

// FuzzHTTPRequest feeds arbitrary raw HTTP requests, as each proxy might
// send them, through RequestFromHTTP and the forward-auth handler.
func FuzzHTTPRequest(f *testing.F) {
	h := envoy.NewForwardAuth(offlineDecider(f, fixedYAML), "/envoy", nil)

	f.Add("GET /envoy/v1/x?y=1 HTTP/1.1\r\nHost: billing.example.com\r\n\r\n", "/envoy")
	f.Add("GET /auth HTTP/1.1\r\nHost: billing.example.com\r\nX-Original-URI: /v1\r\nX-Original-Method: GET\r\n\r\n", "/envoy")
	f.Add("GET / HTTP/1.1\r\nHost: tb\r\nX-Forwarded-Method: GET\r\nX-Forwarded-Uri: /v1\r\nX-Forwarded-Host: billing.example.com\r\nX-Forwarded-Proto: https\r\n\r\n", "")
	f.Add("GET / HTTP/1.1\r\nHost: tb\r\nX-Forwarded-Uri: /v1\r\nX-Original-URI: /admin\r\n\r\n", "/envoy")

	f.Fuzz(func(t *testing.T, raw, prefix string) {
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return
		}
		req, err := envoy.RequestFromHTTP(r, prefix)
		if err == nil {
			if !strings.HasPrefix(req.Path, "/") || req.Host == "" || req.Method == "" {
				t.Fatalf("accepted an incomplete request: %+v", req)
			}
			if strings.ContainsAny(req.Host, " \r\n/@") {
				t.Fatalf("accepted host %q", req.Host)
			}
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		switch w.Code {
		case 200:
			if err != nil {
				t.Fatalf("allowed a request RequestFromHTTP refused: %v", err)
			}
			if a := w.Header().Get("Authorization"); a != "" && a != "Bearer fuzz-token" {
				t.Fatalf("injected %q", a)
			}
		case 403, 503:
			if w.Header().Get(filter.ReasonHeader) == "" || w.Header().Get("Authorization") != "" {
				t.Fatalf("denial %d without a reason or with a token: %v", w.Code, w.Header())
			}
		default:
			t.Fatalf("status %d", w.Code)
		}
	})
}
