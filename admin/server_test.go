package admin

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestAdminServerBoundedOverLoopback: the admin listener sets every limit,
// and a request whose declared body never comes is ended by the read
// timeout over a real socket instead of holding the connection.
func TestAdminServerBoundedOverLoopback(t *testing.T) {
	srv := New(prometheus.NewRegistry()).NewHTTPServer()
	if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 || srv.MaxHeaderBytes <= 0 {
		t.Fatalf("admin server without a limit: %+v", srv)
	}
	srv.ReadTimeout = 100 * time.Millisecond // short, so the test ends soon
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
	if _, err := io.WriteString(conn, "POST /admin/x HTTP/1.1\r\nHost: admin\r\nContent-Length: 1000\r\n\r\nabc"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("connection not closed by the server: %v", err)
	}
}
