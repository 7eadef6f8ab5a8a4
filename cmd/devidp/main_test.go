package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer lets the server goroutine log while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRunServesAndShutsDown(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		id, secret string
		expiresIn  float64
	}{
		{"defaults", nil, "demo", "demo-secret", 3600},
		{"flags", []string{"--client", "a:s:1", "--client=b:two", "--lifetime", "90s"}, "a", "s:1", 90},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var logs syncBuffer
			addrc := make(chan net.Addr, 1)
			done := make(chan error, 1)
			args := append([]string{"--listen", "127.0.0.1:0"}, tt.args...)
			go func() { done <- run(ctx, args, &logs, func(a net.Addr) { addrc <- a }) }()
			var addr net.Addr
			select {
			case addr = <-addrc:
			case err := <-done:
				t.Fatalf("run returned early: %v", err)
			}

			client := &http.Client{}
			defer client.CloseIdleConnections()
			req, _ := http.NewRequest(http.MethodPost, "http://"+addr.String()+"/oauth/token",
				strings.NewReader(url.Values{"grant_type": {"client_credentials"}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth(url.QueryEscape(tt.id), url.QueryEscape(tt.secret))
			res, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var body map[string]any
			_ = json.NewDecoder(res.Body).Decode(&body)
			res.Body.Close()
			if res.StatusCode != 200 || body["expires_in"] != tt.expiresIn {
				t.Errorf("token: %d %v", res.StatusCode, body)
			}

			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
			out := logs.String()
			if !strings.Contains(out, "mint client="+tt.id) || !strings.Contains(out, "shutting down") {
				t.Errorf("log:\n%s", out)
			}
			if strings.Contains(out, tt.secret) || strings.Contains(out, "devidp.") {
				t.Errorf("log leaks a secret or token:\n%s", out)
			}
		})
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--client", "nosecret"},
		{"--client", ":secret"},
		{"--lifetime", "soon"},
		{"extra"},
	} {
		var logs syncBuffer
		if err := run(context.Background(), args, &logs, nil); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}
