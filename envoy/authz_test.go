package envoy_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
	"github.com/tokenbroker/tokenbroker/envoy"
	"github.com/tokenbroker/tokenbroker/filter"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/testclock"
)

// clock is the shared manual clock for the clock seams.
type clock = testclock.Clock

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const secret = "s3cr3t-never-logged"

// stack is a whole tokenbroker over loopback gRPC in front of a real token
// endpoint (the dev IdP on a random port).
type stack struct {
	idp    *devidp.Server
	clock  *clock
	tokens *cache.Tokens
	cur    *envoy.Current // the decider the gRPC server uses, for other transports
	client authv3.AuthorizationClient
	health healthpb.HealthClient
	logs   *bytes.Buffer
	logMu  *sync.Mutex
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

func newStack(t *testing.T, yaml string) *stack {
	t.Helper()
	s := &stack{
		idp:   devidp.New(devidp.Options{Clients: map[string]string{"svc-billing": secret}, Lifetime: time.Hour}),
		clock: testclock.New(time.Now()),
		logs:  &bytes.Buffer{},
		logMu: &sync.Mutex{},
	}
	idpSrv := httptest.NewServer(s.idp)
	t.Cleanup(idpSrv.Close)
	t.Setenv("BILLING_SECRET", secret)

	cfg, err := config.Parse("test.yaml", []byte(strings.ReplaceAll(yaml, "IDP", idpSrv.URL)))
	if err != nil {
		t.Fatal(err)
	}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
		zapcore.AddSync(lockedWriter{s.logMu, s.logs}), zapcore.DebugLevel))

	s.tokens, err = cache.New(cache.Options{
		ExpiryMargin: cfg.Cache.ExpiryMargin.D(),
		RefreshAhead: cfg.Cache.RefreshAhead,
		Now:          s.clock.Now,
		Logger:       log,
	})
	if err != nil {
		t.Fatal(err)
	}
	sources := map[string]credential.Source{}
	for name, c := range cfg.Credentials {
		cc, err := credential.NewClientCredentials(c, nil)
		if err != nil {
			t.Fatal(err)
		}
		cc.Now = s.clock.Now
		cc.Logf = func(name, format string, args ...any) { // as the command wires it: notes on adjusted IdP answers
			log.Sugar().Infow(fmt.Sprintf(format, args...), "credential", name)
		}
		sources[name] = cc
	}
	f, err := filter.New(cfg, sources, s.tokens, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	var cur envoy.Current
	cur.Store(f)
	s.cur = &cur
	hs := health.NewServer()
	gs := envoy.NewGRPCServer(&cur, hs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(ln) }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		gs.GracefulStop()
		s.tokens.Close()
	})
	s.client = authv3.NewAuthorizationClient(conn)
	s.health = healthpb.NewHealthClient(conn)
	return s
}

const billingYAML = `
default_action: deny
credentials:
  billing:
    token_url: IDP/oauth/token
    client_id: svc-billing
    client_secret: ${BILLING_SECRET}
    scopes: [billing:read]
    audience: https://billing.example.com
routes:
  - host: billing.example.com
    path_prefix: /v1
    credential: billing
cache:
  expiry_margin: 30s
  refresh_ahead: 0.2
`

func checkReq(host, path string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Host: host, Path: path, Method: "GET", Scheme: "http",
			Headers: map[string]string{":authority": host, ":path": path, ":method": "GET", "authorization": "Bearer forged"},
		}},
	}}
}

// injected returns the Authorization value set by an OK response, checking
// it is set the way every Envoy version reads as "overwrite".
func injected(t *testing.T, resp *authv3.CheckResponse) string {
	t.Helper()
	if resp.GetStatus().GetCode() != int32(code.Code_OK) {
		t.Fatalf("status %v, denied %v", resp.GetStatus(), resp.GetDeniedResponse())
	}
	ok := resp.GetOkResponse()
	if len(ok.GetHeaders()) != 1 {
		t.Fatalf("headers = %v", ok.GetHeaders())
	}
	h := ok.GetHeaders()[0]
	if h.GetHeader().GetKey() != "authorization" {
		t.Fatalf("key %q", h.GetHeader().GetKey())
	}
	if h.GetAppend() == nil || h.GetAppend().GetValue() {
		t.Fatal("append must be explicitly false")
	}
	if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
		t.Fatalf("append_action %v", h.GetAppendAction())
	}
	for _, r := range ok.GetHeadersToRemove() {
		if strings.EqualFold(r, "authorization") {
			t.Fatal("injected header listed in headers_to_remove")
		}
	}
	v := h.GetHeader().GetValue()
	if !strings.HasPrefix(v, "Bearer devidp.") {
		t.Fatalf("value does not look like a dev IdP token")
	}
	return v
}

func denied(t *testing.T, resp *authv3.CheckResponse, status int, reason string) {
	t.Helper()
	d := resp.GetDeniedResponse()
	if d == nil {
		t.Fatalf("not denied: %v", resp)
	}
	if int(d.GetStatus().GetCode()) != status {
		t.Fatalf("denied with %d, want %d", d.GetStatus().GetCode(), status)
	}
	var got string
	for _, h := range d.GetHeaders() {
		if h.GetHeader().GetKey() == filter.ReasonHeader {
			got = h.GetHeader().GetValue()
		}
	}
	if got != reason {
		t.Fatalf("reason %q, want %q", got, reason)
	}
}

func TestCheckInjectsToken(t *testing.T) {
	s := newStack(t, billingYAML)
	ctx := context.Background()
	resp, err := s.client.Check(ctx, checkReq("Billing.Example.com:443", "/v1/invoices?x=1"))
	if err != nil {
		t.Fatal(err)
	}
	injected(t, resp)
	form := s.idp.LastForm()
	if form.Get("grant_type") != "client_credentials" || form.Get("scope") != "billing:read" || form.Get("audience") != "https://billing.example.com" {
		t.Fatalf("IdP saw %v", form)
	}
}

func TestCheckHeaderMapAndContextExtensions(t *testing.T) {
	s := newStack(t, billingYAML)
	// encode_raw_headers: no Host field, headers only in header_map, and a
	// per-route context extension naming the credential for a host with no route.
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		ContextExtensions: map[string]string{"credential": "billing"},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				{Key: ":authority", RawValue: []byte("other.example.org")},
				{Key: ":path", RawValue: []byte("/anything")},
				{Key: ":method", RawValue: []byte("POST")},
			}},
		}},
	}}
	resp, err := s.client.Check(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	injected(t, resp)

	req.Attributes.ContextExtensions["credential"] = "nope"
	resp, err = s.client.Check(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	denied(t, resp, 403, "unknown credential")
}

func TestCheckNoRoute(t *testing.T) {
	s := newStack(t, billingYAML)
	for _, path := range []string{"/v10", "/"} {
		resp, err := s.client.Check(context.Background(), checkReq("billing.example.com", path))
		if err != nil {
			t.Fatal(err)
		}
		denied(t, resp, 403, "no route")
	}
	resp, err := s.client.Check(context.Background(), checkReq("unknown.example.com", "/v1"))
	if err != nil {
		t.Fatal(err)
	}
	denied(t, resp, 403, "no route")
	if resp.GetStatus().GetCode() != int32(code.Code_PERMISSION_DENIED) {
		t.Fatalf("grpc status %v", resp.GetStatus())
	}

	allow := newStack(t, strings.Replace(billingYAML, "default_action: deny", "default_action: allow", 1))
	resp, err = allow.client.Check(context.Background(), checkReq("unknown.example.com", "/"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetStatus().GetCode() != 0 || len(resp.GetOkResponse().GetHeaders()) != 0 {
		t.Fatalf("allow: %v", resp)
	}
	if allow.idp.Requests() != 0 {
		t.Fatal("pass-through asked the IdP")
	}
}

func TestThousandConcurrentColdChecksMintOnce(t *testing.T) {
	s := newStack(t, billingYAML)
	const n = 1000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	values := make(chan string, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := s.client.Check(context.Background(), checkReq("billing.example.com", "/v1/x"))
			if err != nil {
				errs <- err
				return
			}
			if resp.GetStatus().GetCode() != 0 {
				errs <- fmt.Errorf("status %v", resp.GetStatus())
				return
			}
			values <- resp.GetOkResponse().GetHeaders()[0].GetHeader().GetValue()
		}()
	}
	wg.Wait()
	close(errs)
	close(values)
	for err := range errs {
		t.Fatal(err)
	}
	distinct := map[string]bool{}
	for v := range values {
		distinct[v] = true
	}
	if got := s.idp.Mints(); got != 1 {
		t.Fatalf("IdP minted %d tokens for %d cold Checks, want 1", got, n)
	}
	if len(distinct) != 1 {
		t.Fatalf("%d distinct tokens handed out", len(distinct))
	}
}

func TestRefreshAheadNeverBlocksCheck(t *testing.T) {
	s := newStack(t, billingYAML)
	ctx := context.Background()
	first := injected(t, must(s.client.Check(ctx, checkReq("billing.example.com", "/v1"))))
	s.tokens.Settle()

	// 1 h token, 30 s margin, refresh when < 20 % of the usable life is left.
	// Hang the IdP: Checks in the refresh window must still answer at once.
	hang := make(chan struct{})
	s.idp.SetHang(hang)
	s.clock.Advance(50 * time.Minute)
	for range 20 {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		v := injected(t, must(s.client.Check(cctx, checkReq("billing.example.com", "/v1"))))
		cancel()
		if v != first {
			t.Fatal("token changed while the refresh was still hanging")
		}
	}
	close(hang)
	s.tokens.Settle()
	second := injected(t, must(s.client.Check(ctx, checkReq("billing.example.com", "/v1"))))
	if second == first {
		t.Fatal("token not renewed before expiry")
	}
	if got := s.idp.Mints(); got != 2 {
		t.Fatalf("mints = %d, want 2", got)
	}
}

func TestIdPDown(t *testing.T) {
	s := newStack(t, billingYAML)
	ctx := context.Background()
	first := injected(t, must(s.client.Check(ctx, checkReq("billing.example.com", "/v1"))))
	s.tokens.Settle()
	s.idp.SetDown(http.StatusServiceUnavailable, `{"error":"temporarily_unavailable"}`, "")

	// Still valid: OK with the cached token, even in the refresh window.
	s.clock.Advance(55 * time.Minute)
	if v := injected(t, must(s.client.Check(ctx, checkReq("billing.example.com", "/v1")))); v != first {
		t.Fatal("valid token not served while the IdP is down")
	}
	s.tokens.Settle()

	// Expired (within the margin): 503 with a reason, never the old token.
	s.clock.Advance(5 * time.Minute)
	resp := must(s.client.Check(ctx, checkReq("billing.example.com", "/v1")))
	denied(t, resp, 503, "token unavailable")
	if resp.GetStatus().GetCode() != int32(code.Code_UNAVAILABLE) {
		t.Fatalf("grpc status %v", resp.GetStatus())
	}
	if strings.Contains(resp.String(), strings.TrimPrefix(first, "Bearer ")) {
		t.Fatal("expired token in a denial")
	}

	// IdP back: recovery once the back-off has passed, without restart.
	s.idp.SetDown(0, "", "")
	s.clock.Advance(2 * time.Minute)
	if v := injected(t, must(s.client.Check(ctx, checkReq("billing.example.com", "/v1")))); v == first {
		t.Fatal("expired token served after recovery")
	}
}

func TestSecretsAndTokensNeverLogged(t *testing.T) {
	s := newStack(t, `
credentials:
  billing:
    token_url: IDP/oauth/token
    client_id: svc-wrong
    client_secret: ${BILLING_SECRET}
  good:
    token_url: IDP/oauth/token
    client_id: svc-billing
    client_secret: ${BILLING_SECRET}
routes:
  - host: billing.example.com
    credential: billing
`)
	ctx := context.Background()
	denied(t, must(s.client.Check(ctx, checkReq("billing.example.com", "/v1"))), 503, "token unavailable")
	req := checkReq("x.example.com", "/")
	req.Attributes.ContextExtensions = map[string]string{"credential": "good"}
	v := injected(t, must(s.client.Check(ctx, req)))
	s.tokens.Settle()
	logs := s.logText()
	if !strings.Contains(logs, "invalid_client") {
		t.Fatalf("the IdP's error code should be logged; logs:\n%s", logs)
	}
	for _, leak := range []string{secret, strings.TrimPrefix(v, "Bearer ")} {
		if strings.Contains(logs, leak) {
			t.Fatalf("logs contain a secret or token:\n%s", logs)
		}
	}
}

func TestHealthServing(t *testing.T) {
	s := newStack(t, billingYAML)
	for _, svc := range []string{"", envoy.ServiceName} {
		r, err := s.health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("%q: %v %v", svc, r, err)
		}
	}
}

func must(resp *authv3.CheckResponse, err error) *authv3.CheckResponse {
	if err != nil {
		panic(err)
	}
	return resp
}

// warmServer is an AuthorizationServer whose billing token is already
// cached, and a request that hits it: the hit path, with no network.
func warmServer(tb testing.TB) (*envoy.AuthorizationServer, *authv3.CheckRequest) {
	tb.Helper()
	idp := devidp.New(devidp.Options{Clients: map[string]string{"svc-billing": secret}, Lifetime: time.Hour})
	srv := httptest.NewServer(idp)
	tb.Cleanup(srv.Close)
	tb.Setenv("BILLING_SECRET", secret)
	cfg, err := config.Parse("warm.yaml", []byte(strings.ReplaceAll(billingYAML, "IDP", srv.URL)))
	if err != nil {
		tb.Fatal(err)
	}
	tokens, err := cache.New(cache.Options{ExpiryMargin: cfg.Cache.ExpiryMargin.D()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(tokens.Close)
	cc, err := credential.NewClientCredentials(cfg.Credentials["billing"], nil)
	if err != nil {
		tb.Fatal(err)
	}
	f, err := filter.New(cfg, map[string]credential.Source{"billing": cc}, tokens, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	var cur envoy.Current
	cur.Store(f)
	as := envoy.NewAuthorizationServer(&cur)
	req := checkReq("billing.example.com", "/v1/invoices")
	if r, err := as.Check(context.Background(), req); err != nil || r.GetStatus().GetCode() != 0 {
		tb.Fatalf("warm-up Check: %v %v", r, err)
	}
	tokens.Settle()
	return as, req
}

// BenchmarkCheckHit measures one warm Check in process (no network): request
// extraction, route match, cache hit and response building.
func BenchmarkCheckHit(b *testing.B) {
	as, req := warmServer(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		resp, _ := as.Check(ctx, req)
		if resp.GetStatus().GetCode() != 0 {
			b.Fatal(resp.GetStatus())
		}
	}
}
