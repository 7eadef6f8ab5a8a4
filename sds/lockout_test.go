package sds

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// onlyScopedYAML: every credential has allowed_sources, so a caller outside
// them all may have nothing.
const onlyScopedYAML = `
credentials:
  billing:
    token_url: IDP/oauth/token
    client_id: svc-billing
    client_secret: ${BILLING_SECRET}
    allowed_sources: [spiffe://cluster.local/ns/billing/sa/*]
routes:
  - host: billing.example.com
    credential: billing
cache:
  expiry_margin: 30s
  refresh_ahead: 0.2
`

// dialAs connects from local, a 127.0.0.0/8 address (Linux routes all of
// them to loopback, so each is a distinct source address), with a client
// certificate for spiffeID — or, with spiffeID "", one without a URI SAN:
// a caller known by its address alone. The stack must serve TLS.
func (s *stack) dialAs(spiffeID, local string) *grpc.ClientConn {
	s.t.Helper()
	certPEM, keyPEM := s.tls.ca.IssueURIs(s.t)
	if spiffeID != "" {
		certPEM, keyPEM = s.tls.ca.IssueSPIFFE(s.t, spiffeID)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		s.t.Fatal(err)
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: s.tls.server, ServerName: "localhost", Certificates: []tls.Certificate{pair}})
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return dialer.DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// hooks returns channels told of every stream the server registers and of
// every request it has applied.
func (s *stack) hooks() (opened, requested <-chan *stream) {
	o, r := make(chan *stream, 1000), make(chan *stream, 1000)
	open := func(st *stream) { o <- st }
	req := func(st *stream) { r <- st }
	s.sds.afterOpen.Store(&open)
	s.sds.afterRequest.Store(&req)
	return o, r
}

func (s *stack) rejected(reason string) float64 {
	return testutil.ToFloat64(s.sds.m.rejected.WithLabelValues(reason))
}

// TestCallerWithNoCredentialIsRefusedAtOpen: a caller that no
// credential's allowed_sources admits gets no stream at all — refused with
// PermissionDenied, counted, logged once per interval however many times —
// while an admitted caller gets its value; a reload that admits the caller
// lets its next stream in.
func TestCallerWithNoCredentialIsRefusedAtOpen(t *testing.T) {
	s := newStack(t, onlyScopedYAML, stackOpts{tls: true})
	outside := s.dial(outsideID)
	for i := range 6 {
		if err := subscribe(t, outside, i%2 == 1, insideID, "billing").closed(); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("stream of a caller with no credential: %v, want PermissionDenied", err)
		}
	}
	if got := s.rejected(rejectNoCredential); got != 6 {
		t.Fatalf("rejected no_credential = %v, want 6", got)
	}
	if s.sds.Streams() != 0 {
		t.Fatalf("%d streams held for refused callers", s.sds.Streams())
	}
	if n := strings.Count(s.logText(), "SDS stream refused"); n != 1 {
		t.Fatalf("%d log lines for 6 refusals in one interval, want 1", n)
	}
	if v := subscribe(t, s.dial(insideID), false, "n", "billing").next().values["billing"]; !strings.HasPrefix(v, "Bearer ") {
		t.Fatalf("admitted caller got %q", v)
	}

	s.reload(strings.Replace(onlyScopedYAML, "[spiffe://cluster.local/ns/billing/sa/*]",
		"[spiffe://cluster.local/ns/billing/sa/*, "+outsideID+"]", 1))
	if v := subscribe(t, outside, false, "n", "billing").next().values["billing"]; !strings.HasPrefix(v, "Bearer ") {
		t.Fatalf("caller admitted by a reload got %q", v)
	}
}

// TestStreamHoldingNothingIsClosedAfterTheGrace: streams that serve their
// caller nothing — one that never sends a request, ones that name only
// unknown secrets (acknowledging or not, SotW and Delta), one that
// unsubscribes its only secret — are closed SubscribeGrace after they
// started to hold nothing, on the clock seam; a stream holding a value is
// never closed.
func TestStreamHoldingNothingIsClosedAfterTheGrace(t *testing.T) {
	s := newStack(t, billingYAML, stackOpts{})
	opened, requested := s.hooks()
	conn := s.dial("")
	start := s.clock.Now()

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	silent, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	<-opened // registered; it never sends a request
	unknownACK := subscribe(t, conn, false, "a", "no-such-credential")
	unknownACK.next() // the empty first answer; ACKed
	unknownSilent := subscribe(t, conn, false, "b", "no-such-credential")
	unknownSilent.ack = false
	unknownSilent.next() // never ACKed: no watch open for this stream
	unknownDelta := subscribe(t, conn, true, "c", "no-such-credential")
	holder := subscribe(t, conn, false, "d", "billing")
	holder.next()
	dropper := subscribe(t, conn, true, "e", "billing")
	dropper.next()
	for range 5 {
		<-opened
	}
	for range 8 { // every first request, and every ACK, applied
		<-requested
	}

	s.advanceTo(start.Add(10 * time.Second))
	if err := dropper.dlt.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.SecretType, ResourceNamesUnsubscribe: []string{"billing"}}); err != nil {
		t.Fatal(err)
	}
	for st := range requested {
		if st.key.delta && len(st.feeds) == 0 {
			break // the dropper's unsubscription is applied
		}
	}

	s.advanceTo(start.Add(SubscribeGrace - time.Second))
	if n := s.sds.Streams(); n != 6 {
		t.Fatalf("%d streams before the grace ended, want 6", n)
	}
	s.advanceTo(start.Add(SubscribeGrace))
	if _, err := silent.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("silent stream: %v, want PermissionDenied", err)
	}
	for _, sub := range []*subscriber{unknownACK, unknownSilent, unknownDelta} {
		if err := sub.closed(); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("stream of unknown names: %v, want PermissionDenied", err)
		}
	}
	if n := s.sds.Streams(); n != 2 {
		t.Fatalf("%d streams left, want the holder and the dropper", n)
	}
	// The dropper held billing until 10 s in: its grace runs from there.
	s.advanceTo(start.Add(10*time.Second + SubscribeGrace))
	if err := dropper.closed(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("stream that unsubscribed everything: %v, want PermissionDenied", err)
	}
	s.advanceTo(start.Add(10 * SubscribeGrace))
	if n := s.sds.Streams(); n != 1 {
		t.Fatalf("%d streams, want the holder alone", n)
	}
	if got := s.rejected(rejectIdle); got != 5 {
		t.Fatalf("rejected no_subscription = %v, want 5", got)
	}
	if n := strings.Count(s.logText(), "SDS stream closed: no subscription"); n != 2 { // one per interval
		t.Fatalf("%d close log lines, want 2", n)
	}
}

// TestAddressFloodCannotLockOutCertificates: callers known by address
// alone, from many source addresses, hold at most their share of the
// streams; callers with client certificates still open streams and get
// their value while the flood holds that share, up to the process bound.
func TestAddressFloodCannotLockOutCertificates(t *testing.T) {
	s := newStack(t, billingYAML, stackOpts{tls: true})
	s.sds.lim.streams, s.sds.lim.addressStreams, s.sds.lim.perIdentity = 8, 4, 2
	expect := func(conn *grpc.ClientConn, want codes.Code, what string) {
		t.Helper()
		sub := subscribe(t, conn, false, "flood", "billing")
		if want == codes.OK {
			if v := sub.next().values["billing"]; !strings.HasPrefix(v, "Bearer ") {
				t.Fatalf("%s: got %q", what, v)
			}
			return
		}
		if err := sub.closed(); status.Code(err) != want {
			t.Fatalf("%s: %v, want %v", what, err, want)
		}
	}

	a, b, c := s.dialAs("", "127.0.0.2"), s.dialAs("", "127.0.0.3"), s.dialAs("", "127.0.0.4")
	expect(a, codes.OK, "first address stream")
	expect(a, codes.OK, "second stream of one address")
	expect(a, codes.ResourceExhausted, "third stream of one address")
	expect(b, codes.OK, "second address")
	expect(b, codes.OK, "second address, second stream")
	expect(c, codes.ResourceExhausted, "a third address once address callers hold their share")

	// The certificate holders' share is untouched by the flood.
	for _, id := range []string{insideID, outsideID} {
		conn := s.dialAs(id, "127.0.0.5")
		expect(conn, codes.OK, id)
		expect(conn, codes.OK, id+", second stream")
	}
	expect(s.dialAs("spiffe://cluster.local/ns/x/sa/y", "127.0.0.6"), codes.ResourceExhausted, "past the process bound")
	if got := s.rejected(rejectOverLimit); got != 3 {
		t.Fatalf("rejected too_many_streams = %v, want 3", got)
	}
}

// TestAddressBudgetIsPerNetwork: an address-only caller's budget is its
// IPv4 address or its IPv6 /64 — every address of one /64 shares one — and
// a caller with a certificate has its own per principal and address.
func TestAddressBudgetIsPerNetwork(t *testing.T) {
	same := [][]string{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2:abcd::9"},
		{"fe80::1%eth0", "fe80::2%eth1"},
		{"10.0.0.1", "::ffff:10.0.0.1"},
	}
	for _, group := range same {
		for _, a := range group[1:] {
			if budgetKey("", a) != budgetKey("", group[0]) {
				t.Errorf("%s and %s have different budgets: %q, %q", a, group[0], budgetKey("", a), budgetKey("", group[0]))
			}
		}
	}
	distinct := []string{"2001:db8:1:2::1", "2001:db8:1:3::1", "10.0.0.1", "10.0.0.2", "::1", ""}
	seen := map[string]string{}
	for _, a := range distinct {
		k := budgetKey("", a)
		if prev, ok := seen[k]; ok {
			t.Errorf("%q and %q share budget %q", a, prev, k)
		}
		seen[k] = a
	}
	if budgetKey(insideID, "2001:db8:1:2::1") == budgetKey(insideID, "2001:db8:1:2::2") {
		t.Error("two Envoys with one SPIFFE ID share a budget")
	}
	if budgetKey(insideID, "10.0.0.1") == budgetKey("", "10.0.0.1") {
		t.Error("a certificate holder shares the budget of its address")
	}
}
