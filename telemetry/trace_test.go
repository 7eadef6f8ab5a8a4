package telemetry_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
	"github.com/tokenbroker/tokenbroker/envoy"
	"github.com/tokenbroker/tokenbroker/filter"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/testclock"
	"github.com/tokenbroker/tokenbroker/internal/testpeer"
	"github.com/tokenbroker/tokenbroker/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Secrets of the test IdP's clients: no exported span may hold them.
const (
	billingSecret = "billing-secret-value-0123"
	brokenSecret  = "wrong-secret-value-4567"
)

// A remote parent as a caller's proxy would send it.
const (
	parentTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	parentSpan  = "00f067aa0ba902b7"
)

// stack is tokenbroker's Check path in process, with a real IdP, real gRPC
// and a real forward-auth listener, and tracing sending to a receiver.
type stack struct {
	idp     *devidp.Server
	idpHost string // host:port of its token endpoint
	clk     *testclock.Clock
	tokens  *cache.Tokens
	authz   authv3.AuthorizationClient
	fwdURL  string
	tracing *telemetry.Tracing
	rcv     *receiver
}

// startTracing turns tracing on towards endpoint (always_on unless the
// environment says otherwise) and turns it off at the end of the test.
func startTracing(t *testing.T, protocol, endpoint string) *telemetry.Tracing {
	t.Helper()
	st, on, err := telemetry.Resolve(&config.Tracing{Endpoint: endpoint, Protocol: protocol, Sampler: "always_on"}, func(string) string { return "" })
	if err != nil || !on {
		t.Fatalf("resolve: on=%v %v", on, err)
	}
	tr, err := telemetry.Start(context.Background(), st, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tr.Shutdown(ctx)
	})
	return tr
}

// newStack builds the Check path; tracing must be on already, as in
// tokenbroker serve (the Redis client and filters are built after it).
func newStack(t *testing.T, tr *telemetry.Tracing, rcv *receiver, l2 cache.Shared) *stack {
	t.Helper()
	idp := devidp.New(devidp.Options{Clients: map[string]string{"svc-billing": billingSecret, "svc-broken": "the-right-one-890"}})
	idpSrv := httptest.NewServer(idp)
	t.Cleanup(idpSrv.Close)
	cfg, err := config.Parse("tb.yaml", []byte(`
credentials:
  billing:
    token_url: `+idpSrv.URL+`/oauth/token
    client_id: svc-billing
    client_secret: `+billingSecret+`
    auth_method: client_secret_post
  broken:
    token_url: `+idpSrv.URL+`/oauth/token
    client_id: svc-broken
    client_secret: `+brokenSecret+`
routes:
  - {host: billing.example.com, path_prefix: /v1, credential: billing}
  - {host: broken.example.com, credential: broken}
`))
	if err != nil {
		t.Fatal(err)
	}
	clk := testclock.New(time.Now())
	sources := map[string]credential.Source{}
	for name, c := range cfg.Credentials {
		cc, err := credential.NewClientCredentials(c, nil)
		if err != nil {
			t.Fatal(err)
		}
		cc.Now = clk.Now
		sources[name] = credential.WithFormat(cc, c.Format)
	}
	opts := cache.Options{Now: clk.Now, ExpiryMargin: cfg.Cache.ExpiryMargin.D(), L2: l2}
	tokens, err := cache.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tokens.Close)
	f, err := filter.New(cfg, sources, tokens, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var cur envoy.Current
	cur.Store(f)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := envoy.NewGRPCServer(&cur, health.NewServer())
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	fwd := httptest.NewServer(envoy.NewForwardAuth(&cur, "/envoy", nil))
	t.Cleanup(fwd.Close)
	return &stack{idp: idp, idpHost: strings.TrimPrefix(idpSrv.URL, "http://"), clk: clk, tokens: tokens, authz: authv3.NewAuthorizationClient(conn), fwdURL: fwd.URL, tracing: tr, rcv: rcv}
}

// check sends a Check for host and path with the given request headers, in
// `headers` or, with headerMap, in `header_map` (Envoy's encode_raw_headers).
func (s *stack) check(t *testing.T, host, path string, headerMap bool, hdrs map[string]string) *authv3.CheckResponse {
	t.Helper()
	resp, err := s.send(host, path, headerMap, hdrs)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// send is check for other goroutines than the test's.
func (s *stack) send(host, path string, headerMap bool, hdrs map[string]string) (*authv3.CheckResponse, error) {
	h := &authv3.AttributeContext_HttpRequest{Host: host, Path: path, Method: "GET"}
	if headerMap {
		h.HeaderMap = &corev3.HeaderMap{}
		for k, v := range hdrs {
			h.HeaderMap.Headers = append(h.HeaderMap.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
		}
	} else {
		h.Headers = hdrs
	}
	return s.authz.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: h}}})
}

// flush exports every finished span now: no waiting.
func (s *stack) flush(t *testing.T) []span {
	t.Helper()
	s.tokens.Settle()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.tracing.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}
	return s.rcv.spans()
}

func named(spans []span, name string) []span {
	var out []span
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func byTrace(spans []span, trace string) []span {
	var out []span
	for _, s := range spans {
		if s.traceID() == trace {
			out = append(out, s)
		}
	}
	return out
}

func injectedToken(t *testing.T, resp *authv3.CheckResponse) string {
	t.Helper()
	for _, h := range resp.GetOkResponse().GetHeaders() {
		if h.GetHeader().GetKey() == "authorization" {
			return strings.TrimPrefix(h.GetHeader().GetValue(), "Bearer ")
		}
	}
	t.Fatalf("no token injected: %v", resp)
	return ""
}

// TestCheckJoinsTheRequestsTrace sends Checks carrying a traceparent (in
// headers and in header_map), B3 multi and single headers, and a
// forward-auth request with a traceparent, over both OTLP protocols: each
// Check's span has the caller's trace id and span as parent, the mint is its
// child, and nothing exported holds a token or secret.
func TestCheckJoinsTheRequestsTrace(t *testing.T) {
	for _, protocol := range []string{"grpc", "http/protobuf"} {
		t.Run(protocol, func(t *testing.T) {
			rcv, endpoint := startReceiver(t, protocol)
			s := newStack(t, startTracing(t, protocol, endpoint), rcv, nil)

			cold := s.check(t, "billing.example.com", "/v1/invoices?api_key=query-secret-abc", false, map[string]string{
				"traceparent":   "00-" + parentTrace + "-" + parentSpan + "-01",
				"tracestate":    "vendor=opaque",
				"authorization": "Bearer caller-own-token-xyz",
				"cookie":        "session=cookie-secret-def",
			})
			token := injectedToken(t, cold)
			warm := s.check(t, "billing.example.com", "/v1/x", true, map[string]string{"traceparent": "00-11111111111111111111111111111111-2222222222222222-01"})
			_ = injectedToken(t, warm)
			s.check(t, "billing.example.com", "/v1/x", false, map[string]string{
				"x-b3-traceid": "33333333333333333333333333333333", "x-b3-spanid": "4444444444444444", "x-b3-sampled": "1"})
			s.check(t, "billing.example.com", "/v1/x", true, map[string]string{"b3": "55555555555555555555555555555555-6666666666666666-1"})
			denied := s.check(t, "broken.example.com", "/", false, map[string]string{"traceparent": "00-77777777777777777777777777777777-8888888888888888-01"})
			if denied.GetDeniedResponse() == nil {
				t.Fatalf("broken credential was not denied: %v", denied)
			}
			req, _ := http.NewRequest("GET", s.fwdURL+"/envoy/v1/y", nil)
			req.Host = "billing.example.com"
			req.Header.Set("traceparent", "00-99999999999999999999999999999999-aaaaaaaaaaaaaaaa-01")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != 200 {
				t.Fatalf("forward-auth: %d", res.StatusCode)
			}

			spans := s.flush(t)
			want := []struct {
				trace, parent, transport, cache, decision string
			}{
				{parentTrace, parentSpan, "grpc", "miss", "allow"},
				{"11111111111111111111111111111111", "2222222222222222", "grpc", "hit", "allow"},
				{"33333333333333333333333333333333", "4444444444444444", "grpc", "hit", "allow"},
				{"55555555555555555555555555555555", "6666666666666666", "grpc", "hit", "allow"},
				{"77777777777777777777777777777777", "8888888888888888", "grpc", "miss", "deny"},
				{"99999999999999999999999999999999", "aaaaaaaaaaaaaaaa", "http", "hit", "allow"},
			}
			for _, w := range want {
				checks := named(byTrace(spans, w.trace), "Check")
				if len(checks) != 1 {
					t.Errorf("trace %s: %d Check spans, want 1 (spans: %d)", w.trace, len(checks), len(spans))
					continue
				}
				c := checks[0]
				if c.parentID() != w.parent {
					t.Errorf("trace %s: Check parent %s, want %s", w.trace, c.parentID(), w.parent)
				}
				for k, v := range map[string]string{"tokenbroker.transport": w.transport, "tokenbroker.cache": w.cache, "tokenbroker.decision": w.decision} {
					if c.attr(k) != v {
						t.Errorf("trace %s: %s=%q, want %q", w.trace, k, c.attr(k), v)
					}
				}
			}
			first := named(byTrace(spans, parentTrace), "Check")[0]
			for k, v := range map[string]string{"tokenbroker.credential": "billing", "tokenbroker.route": "billing.example.com/v1", "http.response.status_code": "200"} {
				if first.attr(k) != v {
					t.Errorf("cold Check: %s=%q, want %q", k, first.attr(k), v)
				}
			}
			// tracestate travels on as W3C Trace Context requires: in the
			// span's trace_state, never in an attribute.
			if first.TraceState != "vendor=opaque" {
				t.Errorf("cold Check: trace_state %q, want the caller's", first.TraceState)
			}
			for _, kv := range first.Attributes {
				if strings.Contains(anyString(kv.Value), "vendor=opaque") {
					t.Errorf("tracestate in attribute %s", kv.Key)
				}
			}
			mints := named(byTrace(spans, parentTrace), "mint")
			if len(mints) != 1 || mints[0].parentID() != first.spanID() {
				t.Fatalf("cold Check: want one mint span, child of the Check; got %d", len(mints))
			}
			m := mints[0]
			for k, v := range map[string]string{"tokenbroker.credential": "billing", "tokenbroker.mint.attempt": "1",
				"tokenbroker.mint.result": "success", "server.address": s.idpHost,
				"tokenbroker.idp.auth_method": "client_secret_post", "http.response.status_code": "200"} {
				if m.attr(k) != v {
					t.Errorf("mint: %s=%q, want %q", k, m.attr(k), v)
				}
			}
			if m.attr("tokenbroker.mint.latency_ms") == "" {
				t.Error("mint span has no latency")
			}
			bad := named(byTrace(spans, "77777777777777777777777777777777"), "Check")[0]
			if bad.attr("tokenbroker.reason") != "token unavailable" || bad.attr("http.response.status_code") != "503" {
				t.Errorf("denied Check: reason %q status %q", bad.attr("tokenbroker.reason"), bad.attr("http.response.status_code"))
			}
			failed := named(byTrace(spans, "77777777777777777777777777777777"), "mint")
			if len(failed) != 1 || failed[0].attr("tokenbroker.mint.result") != "error" || failed[0].attr("http.response.status_code") != "401" ||
				failed[0].attr("tokenbroker.mint.backoff_ms") == "" || !strings.Contains(failed[0].Status.GetMessage(), "invalid_client") {
				t.Errorf("failed mint span: %+v", failed)
			}

			noSecrets(t, rcv.raw(), billingSecret, brokenSecret, token, "query-secret-abc", "caller-own-token-xyz", "cookie-secret-def", "Bearer")
		})
	}
}

// noSecrets fails when any secret appears anywhere in what was exported:
// attributes, events, links, status messages, resources.
func noSecrets(t *testing.T, raw []byte, secrets ...string) {
	t.Helper()
	if len(raw) == 0 {
		t.Fatal("nothing was exported")
	}
	for _, s := range secrets {
		if bytes.Contains(raw, []byte(s)) {
			t.Errorf("%q was exported in a span", s)
		}
	}
}

// TestBackgroundRefreshIsItsOwnTrace moves the clock to a token's refresh
// point: the Check that starts the refresh gets cache=refresh, and the
// refresh is a new trace linked to that Check, with the mint its child.
func TestBackgroundRefreshIsItsOwnTrace(t *testing.T) {
	rcv, endpoint := startReceiver(t, "grpc")
	s := newStack(t, startTracing(t, "grpc", endpoint), rcv, nil)
	injectedToken(t, s.check(t, "billing.example.com", "/v1", false, nil))
	s.tokens.Settle()
	s.clk.Advance(50 * time.Minute) // past 80% of the hour-long token's usable life
	injectedToken(t, s.check(t, "billing.example.com", "/v1", false, map[string]string{"traceparent": "00-" + parentTrace + "-" + parentSpan + "-01"}))
	spans := s.flush(t)

	check := named(byTrace(spans, parentTrace), "Check")
	if len(check) != 1 || check[0].attr("tokenbroker.cache") != "refresh" {
		t.Fatalf("the Check at the refresh point: %+v", check)
	}
	if n := len(byTrace(spans, parentTrace)); n != 1 {
		t.Errorf("the refresh is not its own trace: %d spans in the Check's trace", n)
	}
	refreshes := named(spans, "refresh")
	if len(refreshes) != 1 {
		t.Fatalf("%d refresh spans, want 1", len(refreshes))
	}
	r := refreshes[0]
	if len(r.ParentSpanId) != 0 || len(r.Links) != 1 || hex.EncodeToString(r.Links[0].TraceId) != parentTrace || hex.EncodeToString(r.Links[0].SpanId) != check[0].spanID() {
		t.Fatalf("refresh span: parent %x, links %v; want a root linked to the Check %s", r.ParentSpanId, r.Links, check[0].spanID())
	}
	mints := named(byTrace(spans, r.traceID()), "mint")
	if len(mints) != 1 || mints[0].parentID() != r.spanID() || mints[0].attr("tokenbroker.mint.result") != "success" {
		t.Fatalf("refresh's mint: %+v", mints)
	}
}

// TestRedisCommandsAreChildrenOfTheCheck runs the cache with the Redis
// shared tier (a real redis-server): a cold Check's Redis commands are
// spans in its trace, and none records the command's arguments (sealed
// tokens, lock owners).
func TestRedisCommandsAreChildrenOfTheCheck(t *testing.T) {
	rdb := testpeer.StartRedis(t)
	rcv, endpoint := startReceiver(t, "http/protobuf")
	tr := startTracing(t, "http/protobuf", endpoint)
	sealer, err := cache.NewSealer([][]byte{bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	l2, err := cache.NewRedis(cache.RedisOptions{Addrs: []string{rdb.Addr}, Sealer: sealer, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l2.Close() })
	s := newStack(t, tr, rcv, l2)
	token := injectedToken(t, s.check(t, "billing.example.com", "/v1", false, map[string]string{"traceparent": "00-" + parentTrace + "-" + parentSpan + "-01"}))
	spans := byTrace(s.flush(t), parentTrace)

	check := named(spans, "Check")[0]
	mint := named(spans, "mint")
	if len(mint) != 1 || mint[0].parentID() != check.spanID() {
		t.Fatalf("mint not a child of the Check: %+v", mint)
	}
	ids := map[string]bool{}
	for _, sp := range spans {
		ids[sp.spanID()] = true
	}
	var redisOps []string
	for _, sp := range spans {
		if sp.attr("db.system") != "redis" && sp.attr("db.system.name") != "redis" {
			continue
		}
		redisOps = append(redisOps, sp.Name)
		// A command's parent is the Check (a connection's set-up, such as
		// HELLO, is a child of the command that dialled).
		if !ids[sp.parentID()] {
			t.Errorf("redis %s: parent %s outside the Check's trace", sp.Name, sp.parentID())
		}
		for _, kv := range sp.Attributes {
			if strings.HasPrefix(kv.Key, "db.statement") || strings.HasPrefix(kv.Key, "db.query") || strings.HasPrefix(kv.Key, "code.") {
				t.Errorf("redis %s records %s", sp.Name, kv.Key)
			}
		}
	}
	// A miss reads, locks, reads again, stores and releases.
	if len(redisOps) < 4 {
		t.Fatalf("redis spans %v, want get, set (lock), get, set, evalsha", redisOps)
	}
	noSecrets(t, rcv.raw(), billingSecret, token)
}

// TestUnreachableCollectorNeverFailsACheck points the exporter at a
// listener that never accepts (gRPC) and at a closed port (HTTP), sends
// more Checks than the span queue holds, and sees every one answered OK.
func TestUnreachableCollectorNeverFailsACheck(t *testing.T) {
	for _, protocol := range []string{"grpc", "http/protobuf"} {
		t.Run(protocol, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			endpoint := "http://" + ln.Addr().String()
			if protocol == "http/protobuf" {
				ln.Close() // a closed port: connections are refused
			} else {
				// A blackhole: the kernel completes handshakes into the
				// backlog, nobody ever reads. Closing it at the end resets them.
				t.Cleanup(func() { ln.Close() })
			}
			t.Setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "500") // ms: shutdown does not wait long on it
			tr := startTracing(t, protocol, endpoint)
			s := newStack(t, tr, &receiver{}, nil)
			// More Checks than the span queue (2048) holds: spans are
			// dropped, Checks are not.
			const workers, each = 8, 270
			var wg sync.WaitGroup
			var failed atomic.Int64
			for w := range workers {
				wg.Go(func() {
					for i := range each {
						resp, err := s.send("billing.example.com", "/v1", (w+i)%2 == 0, map[string]string{"traceparent": "00-" + parentTrace + "-" + parentSpan + "-01"})
						if err != nil || resp.GetOkResponse() == nil {
							failed.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if n := failed.Load(); n > 0 {
				t.Fatalf("%d of %d Checks not OK with the collector unreachable", n, workers*each)
			}
		})
	}
}
