package envoy_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// okValue returns the injected header of an OK answer, or "" for anything else.
func okValue(resp *authv3.CheckResponse) string {
	if h := resp.GetOkResponse().GetHeaders(); len(h) == 1 {
		return h[0].GetHeader().GetValue()
	}
	return ""
}

// TestIdPFaults drives a cold tokenbroker against an IdP that misbehaves in
// each way IdPs do. Every case must: answer the first Check correctly; not
// ask the IdP again for a burst of further Checks (no hot loop); log a line
// that says what went wrong; and, for failures, recover without a restart
// once the IdP is healthy and the back-off has passed.
func TestIdPFaults(t *testing.T) {
	const burst = 50
	cases := []struct {
		name    string
		timeout string // credential timeout
		fault   func(s *stack) (heal func())
		wantOK  bool   // the IdP's answer yields a usable token
		wantLog string // in the logs after the first Check
		// retryAfter, when set, is the Retry-After the IdP sent: no request
		// may reach it before, one must after.
		retryAfter time.Duration
		// lifetime, for usable answers: the token must be replaced by then.
		lifetime time.Duration
	}{
		{name: "500", fault: down(500, `{"error":"server_error","error_description":"db down"}`, ""),
			wantLog: "token endpoint returned 500: server_error: db down"},
		{name: "503 html", fault: down(503, "<html><body>Service Unavailable</body></html>", ""),
			wantLog: "token endpoint returned 503"},
		{name: "429 with Retry-After", fault: down(429, `{"error":"rate_limited"}`, "120"),
			wantLog: "retry after 2m0s", retryAfter: 120 * time.Second},
		{name: "garbage 200", fault: down(200, "\x00\x01not json at all", ""),
			wantLog: "unusable token response"},
		{name: "empty 200", fault: down(200, "", ""),
			wantLog: "unusable token response"},
		{name: "200 without access_token", fault: down(200, `{"token_type":"Bearer","expires_in":3600}`, ""),
			wantLog: "unusable token response"},
		{name: "expires_in 1", fault: down(200, `{"access_token":"tok-short-lived-0001","token_type":"Bearer","expires_in":1}`, ""),
			wantLog: "does not exceed expiry_margin"},
		{name: "hangs past the timeout", timeout: "300ms", fault: func(s *stack) func() {
			hang := make(chan struct{})
			s.idp.SetHang(hang)
			var once sync.Once // heal runs again when the test ends
			return func() { once.Do(func() { s.idp.SetHang(nil); close(hang) }) }
		}, wantLog: "deadline exceeded"},
		{name: "no expires_in", fault: down(200, `{"access_token":"tok-no-expiry-0001","token_type":"Bearer"}`, ""),
			wantOK: true, wantLog: "adjusted", lifetime: 5 * time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			yaml := billingYAML
			if tc.timeout != "" {
				yaml = strings.Replace(yaml, "    scopes:", "    timeout: "+tc.timeout+"\n    scopes:", 1)
			}
			s := newStack(t, yaml)
			heal := tc.fault(s)
			defer heal()
			ctx := context.Background()
			check := func() *authv3.CheckResponse {
				t.Helper()
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				return must(s.client.Check(cctx, checkReq("billing.example.com", "/v1")))
			}
			first := check()
			s.tokens.Settle()
			for i := range burst + 1 {
				r := first
				if i > 0 {
					r = check()
				}
				if tc.wantOK {
					if okValue(r) == "" {
						t.Fatalf("Check %d: not OK: %v", i, r)
					}
				} else {
					denied(t, r, 503, "token unavailable")
				}
			}
			s.tokens.Settle()
			if got := s.idp.Requests(); got != 1 {
				t.Fatalf("%d IdP requests for %d Checks, want 1", got, burst+1)
			}
			if !strings.Contains(s.logText(), tc.wantLog) {
				t.Fatalf("no log line with %q:\n%s", tc.wantLog, s.logText())
			}

			if tc.wantOK {
				// The assumed lifetime holds: the token is replaced before it ends.
				s.clock.Advance(tc.lifetime - 30*time.Second)
				check()
				s.tokens.Settle()
				if got := s.idp.Requests(); got != 2 {
					t.Fatalf("token not replaced within the assumed lifetime: %d requests", got)
				}
				return
			}
			if tc.retryAfter > 0 {
				// Well past the exponential back-off, still before Retry-After.
				s.clock.Advance(tc.retryAfter - 30*time.Second)
				denied(t, check(), 503, "token unavailable")
				if got := s.idp.Requests(); got != 1 {
					t.Fatalf("IdP asked again %s before its Retry-After", 30*time.Second)
				}
				s.clock.Advance(30 * time.Second)
			} else {
				s.clock.Advance(61 * time.Second) // longer than any back-off after one failure
			}
			heal()
			if okValue(check()) == "" {
				t.Fatalf("no recovery once the IdP is healthy:\n%s", s.logText())
			}
			if got := s.idp.Requests(); got != 2 {
				t.Fatalf("%d IdP requests, want 2", got)
			}
			if strings.Contains(s.logText(), secret) {
				t.Fatal("secret in logs")
			}
		})
	}
}

func down(status int, body, retryAfter string) func(s *stack) func() {
	return func(s *stack) func() {
		s.idp.SetDown(status, body, retryAfter)
		return func() { s.idp.SetDown(0, "", "") }
	}
}

// TestIdPDownAfterWarmUp follows one token from warm-up through an IdP
// outage, second by second on the test clock: no Check fails while the token
// is valid, refresh attempts back off (counted per minute), Checks after the
// expiry get 503 and never the old token, and the IdP's return is noticed
// within the longest back-off.
func TestIdPDownAfterWarmUp(t *testing.T) {
	s := newStack(t, billingYAML)
	ctx := context.Background()
	first := okValue(must(s.client.Check(ctx, checkReq("billing.example.com", "/v1"))))
	if first == "" {
		t.Fatal("warm-up failed")
	}
	s.tokens.Settle()
	s.idp.SetDown(http.StatusServiceUnavailable, `{"error":"temporarily_unavailable"}`, "")

	// 1 h token, 30 s margin, refresh-ahead 0.2: refreshes start near 47 m 54 s,
	// and the token may be handed out until 59 m 30 s.
	s.clock.Advance(47 * time.Minute)
	const step = time.Second
	usableFor := 12*time.Minute + 30*time.Second
	var perMinute []int64
	var okChecks, denials int
	before := s.idp.Requests()
	for elapsed := time.Duration(0); elapsed < 20*time.Minute; elapsed += step {
		resp := must(s.client.Check(ctx, checkReq("billing.example.com", "/v1")))
		s.tokens.Settle()
		switch v := okValue(resp); {
		case elapsed < usableFor:
			if v != first {
				t.Fatalf("at +%s (token still valid) Check answered %v", elapsed, resp)
			}
			okChecks++
		default:
			denied(t, resp, 503, "token unavailable")
			if strings.Contains(resp.String(), strings.TrimPrefix(first, "Bearer ")) {
				t.Fatal("expired token in a denial")
			}
			denials++
		}
		if elapsed%time.Minute == time.Minute-step {
			now := s.idp.Requests()
			perMinute = append(perMinute, now-before)
			before = now
		}
		s.clock.Advance(step)
	}
	t.Logf("refresh attempts per minute with the IdP down: %v (%d OK Checks, %d denials)", perMinute, okChecks, denials)
	// Back-off from 1 s doubling to 1 min (jittered to half or more): at most
	// 8 attempts in the first minute, at most 2 in any later one, and never a
	// whole two minutes without one.
	for i, n := range perMinute {
		limit := int64(2)
		if i <= 1 {
			limit = 8 // the outage is first seen in minute 0 or 1
		}
		if n > limit {
			t.Errorf("minute %d: %d attempts, want ≤ %d", i, n, limit)
		}
		if i > 0 && n == 0 && perMinute[i-1] == 0 {
			t.Errorf("minutes %d–%d: retries stopped", i-1, i)
		}
	}

	// IdP back: a Check gets a fresh token within the longest back-off.
	s.idp.SetDown(0, "", "")
	for waited := time.Duration(0); ; waited += step {
		if v := okValue(must(s.client.Check(ctx, checkReq("billing.example.com", "/v1")))); v != "" {
			if v == first {
				t.Fatal("expired token served after recovery")
			}
			t.Logf("recovered %s after the IdP came back", waited)
			break
		}
		if waited > 61*time.Second {
			t.Fatal("no recovery within the longest back-off")
		}
		s.tokens.Settle()
		s.clock.Advance(step)
	}
}

// TestIdPConnectionDropped: a token endpoint that accepts connections and
// closes them at once (a load balancer with no healthy backend). The
// transport error gives a 503, a log line, and back-off: a burst of Checks
// opens one connection, not one each. (http.Client retries an idempotent
// request once on a fresh connection; a POST is not retried.)
func TestIdPConnectionDropped(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepts atomic.Int64
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-acceptDone })

	s := newStack(t, strings.Replace(billingYAML, "IDP/oauth/token", "http://"+ln.Addr().String()+"/oauth/token", 1))
	ctx := context.Background()
	for range 50 {
		denied(t, must(s.client.Check(ctx, checkReq("billing.example.com", "/v1"))), 503, "token unavailable")
	}
	s.tokens.Settle()
	if n := accepts.Load(); n != 1 {
		t.Fatalf("%d connections for 50 Checks, want 1 (then back-off)", n)
	}
	// The cause reads "EOF" or "server closed idle connection" depending on timing.
	if logs := s.logText(); !strings.Contains(logs, "mint failed") || !strings.Contains(logs, "token request to "+ln.Addr().String()) {
		t.Fatalf("no clear log line:\n%s", logs)
	}
	s.clock.Advance(61 * time.Second)
	denied(t, must(s.client.Check(ctx, checkReq("billing.example.com", "/v1"))), 503, "token unavailable")
	if n := accepts.Load(); n != 2 {
		t.Fatalf("%d connections after the back-off, want 2", n)
	}
}
