package envoy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/envoy"
)

// TestForwardAuthServerBounded: the forward-auth listener sets every limit.
func TestForwardAuthServerBounded(t *testing.T) {
	s := envoy.NewForwardAuthServer(http.NotFoundHandler())
	if s.ReadHeaderTimeout <= 0 || s.ReadTimeout <= 0 || s.WriteTimeout <= 0 || s.IdleTimeout <= 0 || s.MaxHeaderBytes <= 0 {
		t.Errorf("forward-auth server without a limit: %+v", s)
	}
}

// TestForwardAuthNeverWaitsForBody: a request that declares a body and never
// sends it is answered at once over a real socket, and the connection then
// closes. The server's read timeout is an hour here, so only not waiting
// for the body can explain the answer.
func TestForwardAuthNeverWaitsForBody(t *testing.T) {
	srv := envoy.NewForwardAuthServer(envoy.NewForwardAuth(offlineDecider(t, fixedYAML), "", nil))
	srv.ReadTimeout = time.Hour
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	defer func() { _ = srv.Close(); <-done }()

	for _, framing := range []string{"Content-Length: 100\r\n", "Transfer-Encoding: chunked\r\n"} {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second)) // a failure report, not a synchronization
		if _, err := io.WriteString(conn, "POST /nginx HTTP/1.1\r\nHost: billing.example.com\r\nX-Original-URI: /v1/x\r\nX-Original-Method: GET\r\n"+framing+"\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: no answer: %v", framing, err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || res.Header.Get("Authorization") != "Bearer fuzz-token" {
			t.Errorf("%s: %d %v, want 200 with the token", framing, res.StatusCode, res.Header)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("%s: connection still open after the answer (%v)", framing, err)
		}
		conn.Close()
	}
}
