package httpserver

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestNewSetsEveryLimit(t *testing.T) {
	s := New(http.NotFoundHandler(), Limits{})
	if s.ReadHeaderTimeout != ReadHeaderTimeout || s.ReadTimeout != ReadTimeout || s.WriteTimeout != WriteTimeout ||
		s.IdleTimeout != IdleTimeout || s.MaxHeaderBytes != MaxHeaderBytes {
		t.Errorf("defaults not applied: %+v", s)
	}
	s = New(http.NotFoundHandler(), Limits{Read: time.Second, Write: 3 * time.Minute})
	if s.ReadTimeout != time.Second || s.WriteTimeout != 3*time.Minute || s.ReadHeaderTimeout != ReadHeaderTimeout {
		t.Errorf("overrides not applied: %+v", s)
	}
}

// TestHeaderLimitOverLoopback: headers past MaxHeaderBytes get 431 from a
// real listener, not a buffer that grows.
func TestHeaderLimitOverLoopback(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(http.NotFoundHandler(), Limits{})
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	defer func() { _ = srv.Close(); <-done }()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second)) // a failure report, not a synchronization
	big := strings.Repeat("x", 2*MaxHeaderBytes)
	go func() { _, _ = conn.Write([]byte("GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + big + "\r\n\r\n")) }()
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("oversized headers: %d, want 431", res.StatusCode)
	}
}
