package broker

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/httpserver"
)

// TestServerBounded: the broker's listener sets every limit, and its write
// timeout outlasts two requests to the slowest upstream.
func TestServerBounded(t *testing.T) {
	e := setup(t, config.BrokerUpstream{}, map[string]string{"c": "s"})
	e.broker.ups[0].Timeout = config.Duration(time.Minute)
	s := e.broker.NewServer()
	if s.ReadHeaderTimeout <= 0 || s.ReadTimeout <= 0 || s.IdleTimeout <= 0 || s.MaxHeaderBytes <= 0 {
		t.Errorf("broker server without a limit: %+v", s)
	}
	if s.WriteTimeout < 2*time.Minute || s.WriteTimeout < httpserver.WriteTimeout {
		t.Errorf("write timeout %s is shorter than two IdP requests of 1m", s.WriteTimeout)
	}
}

// TestBodyNeverSentClosesConnection: a token request that declares a body
// and sends only part of it is ended by the read timeout over a real
// socket: the read on the client side returns (an error answer, then the
// close) instead of the connection being held forever.
func TestBodyNeverSentClosesConnection(t *testing.T) {
	e := setup(t, config.BrokerUpstream{}, map[string]string{"c": "s"})
	srv := e.broker.NewServer()
	srv.ReadTimeout = 100 * time.Millisecond // short, so the test ends soon; the default is httpserver.ReadTimeout
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	defer func() { _ = srv.Close(); <-done }()

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second)) // a failure report, not a synchronization
	if _, err := io.WriteString(conn, "POST /oauth/token HTTP/1.1\r\nHost: broker\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ngrant_type=client_cre"); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(conn) // returns when the server closes the connection
	if err != nil {
		t.Fatalf("connection not closed by the server: %v", err)
	}
	if len(got) > 0 && !strings.HasPrefix(string(got), "HTTP/1.1 400") {
		t.Errorf("answer to a body that never came: %q, want 400 or nothing", got)
	}
	if e.idp.Requests() != 0 {
		t.Error("a partial request reached the IdP")
	}
}

// TestServerRoutesOnlyThePath: the listener answers broker.path and nothing else.
func TestServerRoutesOnlyThePath(t *testing.T) {
	e := setup(t, config.BrokerUpstream{}, map[string]string{"c": "s"})
	srv := e.broker.NewServer()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	defer func() { _ = srv.Close(); <-done }()
	res, err := e.hc.Get("http://" + ln.Addr().String() + "/other")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("GET /other: %d, want 404", res.StatusCode)
	}
}
