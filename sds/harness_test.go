package sds

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	"google.golang.org/protobuf/proto"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
	"github.com/tokenbroker/tokenbroker/envoy"
	"github.com/tokenbroker/tokenbroker/filter"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/testcerts"
	"github.com/tokenbroker/tokenbroker/internal/testclock"
	"github.com/tokenbroker/tokenbroker/internal/tlsreload"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const idpSecret = "s3cr3t-never-logged"

// stack is a tokenbroker gRPC server — ext_authz and SDS on one listener,
// as serve.go wires them — in front of the dev IdP, on a manual clock.
type stack struct {
	t      testing.TB
	idp    *devidp.Server
	idpURL string
	clock  *testclock.Clock
	tokens *cache.Tokens
	sds    *Server
	cur    *envoy.Current
	reg    *prometheus.Registry
	addr   string
	tls    *clientTLS // nil: plaintext
	grpc   *grpc.Server
	logs   *bytes.Buffer
	logMu  *sync.Mutex
}

// clientTLS makes client certificates for a TLS stack.
type clientTLS struct {
	ca     *testcerts.CA
	server *x509.CertPool
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (s *stack) logText() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.logs.String()
}

type stackOpts struct {
	lifetime time.Duration
	tls      bool // serve TLS with required client certificates
	quiet    bool // log at info, not debug (benchmarks)
}

// newStack starts the stack for a configuration (IDP stands for the dev
// IdP's URL).
func newStack(t testing.TB, yaml string, o stackOpts) *stack {
	t.Helper()
	if o.lifetime == 0 {
		o.lifetime = time.Hour
	}
	s := &stack{
		t:     t,
		idp:   devidp.New(devidp.Options{Clients: map[string]string{"svc-billing": idpSecret, "svc-maps": idpSecret}, Lifetime: o.lifetime}),
		clock: testclock.New(time.Now()),
		logs:  &bytes.Buffer{},
		logMu: &sync.Mutex{},
		reg:   prometheus.NewRegistry(),
	}
	idpSrv := httptest.NewServer(s.idp)
	t.Cleanup(idpSrv.Close)
	s.idpURL = idpSrv.URL
	t.Setenv("BILLING_SECRET", idpSecret)
	level := zapcore.DebugLevel
	if o.quiet {
		level = zapcore.InfoLevel
	}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
		zapcore.AddSync(lockedWriter{s.logMu, s.logs}), level))
	cfg := s.parse(yaml)
	var err error
	s.tokens, err = cache.New(cache.Options{
		ExpiryMargin: cfg.Cache.ExpiryMargin.D(),
		RefreshAhead: cfg.Cache.RefreshAhead,
		Now:          s.clock.Now,
		Logger:       log,
		Meter:        cache.NewMetrics(s.reg),
	})
	if err != nil {
		t.Fatal(err)
	}
	f := s.filter(cfg, log)
	s.cur = &envoy.Current{}
	s.cur.Store(f)
	s.sds = New(Options{Filter: f, Tokens: s.tokens, Logger: log, Reg: s.reg, Now: s.clock.Now,
		AfterFunc: func(d time.Duration, fn func()) func() bool { return s.clock.AfterFunc(d, fn).Stop }})

	opts := ServerOptions() // as cmd/tokenbroker's listener sets them
	if o.tls {
		dir := t.TempDir()
		ca := testcerts.NewCA(t, "envoy-ca")
		cert, key := ca.IssueFiles(t, dir, "server", "localhost", false)
		caFile := dir + "/ca.crt"
		testcerts.Write(t, caFile, ca.PEM(), time.Now())
		tc, err := tlsreload.ServerConfig(config.ListenTLS{CertFile: cert, KeyFile: key, ClientCAFile: caFile})
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
		s.tls = &clientTLS{ca: ca, server: ca.Pool()}
	}
	s.grpc = envoy.NewGRPCServer(s.cur, health.NewServer(), opts...)
	s.sds.Register(s.grpc)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	go func() { _ = s.grpc.Serve(ln) }()
	t.Cleanup(func() {
		s.sds.Stop()
		s.grpc.GracefulStop()
		s.tokens.Close()
	})
	return s
}

func (s *stack) parse(yaml string) *config.Config {
	s.t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(strings.ReplaceAll(yaml, "IDP", s.idpURL)))
	if err != nil {
		s.t.Fatal(err)
	}
	return cfg
}

// filter builds the filter for cfg with sources on the manual clock.
func (s *stack) filter(cfg *config.Config, log *zap.Logger) *filter.Filter {
	s.t.Helper()
	sources := map[string]credential.Source{}
	for name, c := range cfg.Credentials {
		if c.Type == "static" {
			src, err := credential.FromConfig(c, nil)
			if err != nil {
				s.t.Fatal(err)
			}
			sources[name] = src
			continue
		}
		cc, err := credential.NewClientCredentials(c, nil)
		if err != nil {
			s.t.Fatal(err)
		}
		cc.Now = s.clock.Now
		sources[name] = credential.WithFormat(cc, c.Format) // as credential.FromConfig does
	}
	f, err := filter.New(cfg, sources, s.tokens, log, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	return f
}

// reload applies a new configuration as serve.go's reload does.
func (s *stack) reload(yaml string) {
	s.t.Helper()
	f := s.filter(s.parse(yaml), zap.NewNop())
	s.cur.Store(f)
	s.sds.Reconfigure(f)
	s.settle()
}

// settle waits for every feed's work in flight (refreshes started by the
// clock, primes done elsewhere).
func (s *stack) settle() {
	s.sds.work.Wait()
	s.tokens.Settle()
}

// advanceTo moves the clock to at and waits for the work it starts.
func (s *stack) advanceTo(at time.Time) {
	s.clock.Advance(at.Sub(s.clock.Now()))
	s.settle()
}

// dial connects to the stack; spiffeID, on a TLS stack, is the client
// certificate's URI SAN.
func (s *stack) dial(spiffeID string) *grpc.ClientConn {
	s.t.Helper()
	creds := insecure.NewCredentials()
	if s.tls != nil {
		certPEM, keyPEM := s.tls.ca.IssueSPIFFE(s.t, spiffeID)
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			s.t.Fatal(err)
		}
		creds = credentials.NewTLS(&tls.Config{RootCAs: s.tls.server, ServerName: "localhost", Certificates: []tls.Certificate{pair}})
	}
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// check sends a Check naming credential and returns the injected value.
func (s *stack) check(conn *grpc.ClientConn, cred string) string {
	s.t.Helper()
	resp, err := authv3.NewAuthorizationClient(conn).Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request:           &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Host: "api.example.com", Path: "/", Method: "GET"}},
		ContextExtensions: map[string]string{"credential": cred},
	}})
	if err != nil {
		s.t.Fatal(err)
	}
	hs := resp.GetOkResponse().GetHeaders()
	if len(hs) != 1 {
		s.t.Fatalf("Check for %s: %v", cred, resp)
	}
	return hs[0].GetHeader().GetValue()
}

// subscriber is one SDS stream as Envoy's client drives it: it names its
// secrets, and acknowledges every response unless told not to.
type subscriber struct {
	t     testing.TB
	delta bool
	sotw  secretv3.SecretDiscoveryService_StreamSecretsClient
	dlt   secretv3.SecretDiscoveryService_DeltaSecretsClient
	names []string
	node  *corev3.Node
	ack   bool

	version string // last SotW version_info ACKed
	nonce   string // last response nonce
}

// update is what one response told the subscriber.
type update struct {
	values  map[string]string // secret name → inline_string
	removed []string          // delta removals
	version string
	nonce   string
}

// subscribe opens a stream for names and sends the first request.
func subscribe(t testing.TB, conn *grpc.ClientConn, delta bool, nodeID string, names ...string) *subscriber {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c := secretv3.NewSecretDiscoveryServiceClient(conn)
	sub := &subscriber{t: t, delta: delta, names: names, node: &corev3.Node{Id: nodeID, Cluster: "egress"}, ack: true}
	var err error
	if delta {
		sub.dlt, err = c.DeltaSecrets(ctx)
		if err == nil {
			err = sub.dlt.Send(&discoveryv3.DeltaDiscoveryRequest{Node: sub.node, TypeUrl: resource.SecretType, ResourceNamesSubscribe: names})
		}
	} else {
		sub.sotw, err = c.StreamSecrets(ctx)
		if err == nil {
			err = sub.sotw.Send(&discoveryv3.DiscoveryRequest{Node: sub.node, TypeUrl: resource.SecretType, ResourceNames: names})
		}
	}
	if err != nil && err != io.EOF { // EOF: the server ended the stream; Recv tells why

		t.Fatal(err)
	}
	return sub
}

// subscribeMore adds names to the subscription.
func (sub *subscriber) subscribeMore(names ...string) {
	sub.t.Helper()
	sub.names = append(sub.names, names...)
	var err error
	if sub.delta {
		err = sub.dlt.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.SecretType, ResourceNamesSubscribe: names})
	} else {
		err = sub.sotw.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.SecretType, ResourceNames: sub.names, VersionInfo: sub.version, ResponseNonce: sub.nonce})
	}
	if err != nil {
		sub.t.Fatal(err)
	}
}

// recvTimeout bounds a wait for a response that must come: a failure
// guard, not synchronisation.
const recvTimeout = 20 * time.Second

// next waits for the next response, and ACKs it when sub.ack is set.
func (sub *subscriber) next() update {
	sub.t.Helper()
	u, err := sub.recv()
	if err != nil {
		sub.t.Fatalf("recv: %v", err)
	}
	return u
}

func (sub *subscriber) recv() (update, error) {
	type result struct {
		u   update
		err error
	}
	ch := make(chan result, 1)
	go func() {
		u, err := sub.recvOnce()
		ch <- result{u, err}
	}()
	select {
	case r := <-ch:
		return r.u, r.err
	case <-time.After(recvTimeout):
		sub.t.Fatalf("no SDS response within %v", recvTimeout)
		return update{}, nil
	}
}

func (sub *subscriber) recvOnce() (update, error) {
	u := update{values: map[string]string{}}
	if sub.delta {
		resp, err := sub.dlt.Recv()
		if err != nil {
			return u, err
		}
		for _, r := range resp.GetResources() {
			u.values[r.GetName()] = inline(sub.t, r.GetResource().GetValue())
		}
		u.removed, u.version, u.nonce = resp.GetRemovedResources(), resp.GetSystemVersionInfo(), resp.GetNonce()
		sub.nonce = resp.GetNonce()
		if sub.ack {
			err = sub.dlt.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.SecretType, ResponseNonce: resp.GetNonce()})
		}
		return u, err
	}
	resp, err := sub.sotw.Recv()
	if err != nil {
		return u, err
	}
	for _, r := range resp.GetResources() {
		var s tlsv3.Secret
		if err := r.UnmarshalTo(&s); err != nil {
			sub.t.Errorf("resource: %v", err)
		}
		u.values[s.GetName()] = s.GetGenericSecret().GetSecret().GetInlineString()
	}
	u.version, u.nonce = resp.GetVersionInfo(), resp.GetNonce()
	sub.nonce = resp.GetNonce()
	if sub.ack {
		sub.version = resp.GetVersionInfo()
		err = sub.sotw.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.SecretType, ResourceNames: sub.names,
			VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()})
	}
	return u, err
}

func inline(t testing.TB, b []byte) string {
	t.Helper()
	var s tlsv3.Secret
	if err := proto.Unmarshal(b, &s); err != nil {
		t.Errorf("resource: %v", err)
	}
	return s.GetGenericSecret().GetSecret().GetInlineString()
}

// closed waits for the stream to end and returns how.
func (sub *subscriber) closed() error {
	sub.t.Helper()
	for {
		_, err := sub.recv()
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

// withCredentials adds credentials (YAML under credentials:) to billingYAML.
func withCredentials(more string) string { return strings.Replace(billingYAML, "#MORE\n", more, 1) }

const billingYAML = `
credentials:
  billing:
    token_url: IDP/oauth/token
    client_id: svc-billing
    client_secret: ${BILLING_SECRET}
    scopes: [billing:read]
#MORE
routes:
  - host: billing.example.com
    credential: billing
cache:
  expiry_margin: 30s
  refresh_ahead: 0.2
`
