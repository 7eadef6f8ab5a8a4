package sds

import (
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/envoy"
)

// billingKey is the cache key of billingYAML's credential.
func (s *stack) billingKey() cache.Key {
	return cache.Key{ID: s.parse(billingYAML).Credentials["billing"].Identity(), Name: "billing"}
}

// serveMore starts another gRPC server with SDS, as a reload that changes
// listen.tls builds one beside the old, and dials it (plaintext).
func (s *stack) serveMore() (*Registration, *grpc.ClientConn) {
	s.t.Helper()
	g := envoy.NewGRPCServer(s.cur, health.NewServer())
	r := s.sds.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	s.t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { _ = conn.Close() })
	return r, conn
}

// TestEndedRegistrationEndsOnlyItsStreams: ending the registration of a
// retired gRPC server ends the SDS streams that came in through it (with
// Unavailable, which Envoy retries), now and for any stream opened on it
// later, while the streams of another server keep their subscription and
// get the next value.
func TestEndedRegistrationEndsOnlyItsStreams(t *testing.T) {
	eachProtocol(t, func(t *testing.T, delta bool) {
		s := newStack(t, billingYAML, stackOpts{})
		oldReg, oldConn := s.serveMore()
		_, newConn := s.serveMore()
		onOld := subscribe(t, oldConn, delta, "envoy", "billing")
		onNew := subscribe(t, newConn, delta, "envoy", "billing")
		token := onOld.next().values["billing"]
		if v := onNew.next().values["billing"]; v != token {
			t.Fatal("the two servers' subscribers disagree")
		}
		if n := s.sds.Subscribers()["billing"]; n != 2 {
			t.Fatalf("%d subscribers, want 2", n)
		}

		oldReg.End()
		if err := onOld.closed(); status.Code(err) != codes.Unavailable {
			t.Fatalf("the retired server's stream ended with %v, want Unavailable", err)
		}
		// The stream is forgotten before its status reaches the client.
		if n := s.sds.Subscribers()["billing"]; n != 1 {
			t.Fatalf("%d subscribers after the retirement, want 1", n)
		}
		if err := subscribe(t, oldConn, delta, "envoy", "billing").closed(); status.Code(err) != codes.Unavailable {
			t.Fatalf("a new stream on the retired server ended with %v, want Unavailable", err)
		}

		// The other server's stream lives on: an invalidation reaches it.
		s.tokens.Invalidate(s.billingKey())
		s.sds.Invalidate("billing")
		if v := onNew.next().values["billing"]; v == token || v == "" {
			t.Fatalf("the other server's subscriber got %q after the invalidation, want a new token", v)
		}
		oldReg.End() // again: harmless
	})
}
