package envoy_test

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/envoy"
	"github.com/tokenbroker/tokenbroker/filter"
)

// ambiguousPaths are spellings of /v1/… that an upstream may resolve
// outside /v1, or that decoders read differently.
var ambiguousPaths = []string{
	"/v1/../admin", "/v1/%2e%2e/admin", "/v1/%2E%2e/admin", "/v1/.%2e/admin", "/v1/%2e./admin",
	"/v1/..;/admin", "/v1;x/../admin", "/v1/./x", "/v1/...", "/v1/..%3b/admin",
	"/v1%2f..%2fadmin", "/v1%2F..%2Fadmin", "/v1%5c..%5cadmin", "/v1\\..\\admin",
	"/v1/%00", "/v1/%zz", "/v1/%u002e%u002e/admin", "/v1/%252e%252e/admin", "/v1/%c0%ae%c0%ae/admin",
}

const pathsYAML = `
routes:
  - {host: api.example.com, path_prefix: /v1, credential: v1}
`

// TestAmbiguousPathsThroughTheListeners: every ambiguous spelling is denied
// 403 "ambiguous path" with no credential, under deny and under allow, over
// gRPC (path field, :path header, raw header_map) and through each
// forward-auth dialect on a real socket; canonical spellings of /v1 get it.
func TestAmbiguousPathsThroughTheListeners(t *testing.T) {
	l := startListeners(t)
	tokens := newTokens(t)
	creds := staticCredentials(t, "v1")
	ctx := context.Background()
	for _, action := range []string{"deny", "allow"} {
		f, err := staticDecider(t, tokens, "default_action: "+action+"\n"+creds+pathsYAML)
		if err != nil {
			t.Fatal(err)
		}
		l.cur.Store(f)
		for _, p := range ambiguousPaths {
			for name, req := range grpcSpellings("api.example.com", p) {
				resp, err := l.grpc.Check(ctx, req)
				if err != nil {
					t.Fatalf("%s %s %q: %v", action, name, p, err)
				}
				denied(t, resp, 403, filter.ReasonAmbiguousPath)
			}
			for name, send := range httpDialects(l, "api.example.com", p) {
				code, h := send(t)
				// Go's HTTP server itself answers 400 to a request line it
				// cannot parse (%zz, controls): a denial too.
				if (code != 403 || h.Get(filter.ReasonHeader) != filter.ReasonAmbiguousPath) && code != 400 {
					t.Errorf("%s %s %q: %d %q", action, name, p, code, h.Get(filter.ReasonHeader))
				}
				if h.Get("X-Api-Key") != "" {
					t.Fatalf("%s %s %q: credential sent", action, name, p)
				}
			}
		}
		for _, p := range []string{"/v1", "/v1/x?q=/../admin", "//v1//x", "/v%31/x", "/v1/a%2Eb"} {
			for name, req := range grpcSpellings("API.example.com:443", p) {
				resp := must(l.grpc.Check(ctx, req))
				if v := resp.GetOkResponse().GetHeaders(); len(v) != 1 || v[0].GetHeader().GetValue() != "key-v1" {
					t.Fatalf("%s %s %q: %v", action, name, p, resp)
				}
			}
			for name, send := range httpDialects(l, "api.example.com:443", p) {
				if code, h := send(t); code != 200 || h.Get("X-Api-Key") != "key-v1" {
					t.Fatalf("%s %s %q: %d %v", action, name, p, code, h)
				}
			}
		}
	}
}

// grpcSpellings is one request in the three places Envoy may put the path.
func grpcSpellings(host, path string) map[string]*authv3.CheckRequest {
	field := checkReq(host, path)
	header := checkReq(host, path)
	header.Attributes.Request.Http.Path = ""
	raw := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				{Key: ":authority", RawValue: []byte(host)},
				{Key: ":path", RawValue: []byte(path)},
				{Key: ":method", RawValue: []byte("GET")},
			}},
		}},
	}}
	return map[string]*authv3.CheckRequest{"path field": field, ":path header": header, "header_map": raw}
}

// httpDialects sends one request the way each proxy asks forward-auth.
func httpDialects(l *listeners, host, path string) map[string]func(testing.TB) (int, http.Header) {
	wrap := func(method, target string, hdr ...string) func(testing.TB) (int, http.Header) {
		return func(tb testing.TB) (int, http.Header) {
			code, h := l.rawHTTP(tb, method, target, hdr...)
			return code, h
		}
	}
	return map[string]func(testing.TB) (int, http.Header){
		"envoy http_service": wrap("GET", "/envoy"+path, "Host", host),
		"nginx":              wrap("GET", "/nginx", "Host", host, "X-Original-URI", path, "X-Original-Method", "GET"),
		"caddy/traefik":      wrap("GET", "/", "Host", "127.0.0.1", "X-Forwarded-Host", host, "X-Forwarded-Uri", path, "X-Forwarded-Method", "GET"),
	}
}

// TestCheckInvalidUTF8: a CheckRequest whose strings are not UTF-8 (as
// Envoy sends them without encode_raw_headers) is answered with a 403
// decision over real gRPC, not an INTERNAL error. The control shows where
// the error came from: grpc-go's proto unmarshal of the request.
func TestCheckInvalidUTF8(t *testing.T) {
	l := startListeners(t)
	f, err := staticDecider(t, newTokens(t), "default_action: allow\n"+staticCredentials(t, "v1")+pathsYAML)
	if err != nil {
		t.Fatal(err)
	}
	l.cur.Store(f)
	ctx := context.Background()
	cases := map[string]*authv3.CheckRequest{
		"path":              checkReq("api.example.com", "/v1/"+placeholder),
		"host":              checkReq(placeholder+".example.com", "/v1"),
		"header value":      checkReq("api.example.com", "/v1"),
		"context extension": checkReq("api.example.com", "/v1"),
	}
	cases["header value"].Attributes.Request.Http.Headers["x-latin1"] = "caf" + placeholder
	cases["context extension"].Attributes.ContextExtensions = map[string]string{"credential": placeholder}
	for name, req := range cases {
		resp, err := l.grpc.Check(ctx, req, grpc.ForceCodecV2(corrupting{}))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		denied(t, resp, 403, envoy.ReasonInvalidUTF8)
	}

	// Control: a plain grpc-go server fails the same request with INTERNAL.
	plain := grpc.NewServer()
	authv3.RegisterAuthorizationServer(plain, envoy.NewAuthorizationServer(&l.cur))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = plain.Serve(ln) }()
	defer plain.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = authv3.NewAuthorizationClient(conn).Check(ctx, cases["path"], grpc.ForceCodecV2(corrupting{}))
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "unmarshal") {
		t.Fatalf("control: %v", err)
	}

	// With encode_raw_headers the bytes travel as bytes: a decision on them.
	raw := grpcSpellings("api.example.com", "/v1/caf\xe9")["header_map"]
	denied(t, must(l.grpc.Check(ctx, raw)), 403, filter.ReasonAmbiguousPath)
}

// placeholder is replaced on the wire by corrupting with bytes that are not UTF-8.
const placeholder = "@@NOT-UTF8@@"

// corrupting is the proto codec, but it swaps placeholder for invalid UTF-8
// after marshalling: what Envoy's C++ protobuf sends, and what protobuf-go
// refuses to produce.
type corrupting struct{}

func (corrupting) Name() string { return proto.Name }

func (corrupting) Marshal(v any) (mem.BufferSlice, error) {
	out, err := encoding.GetCodecV2(proto.Name).Marshal(v)
	if err != nil {
		return nil, err
	}
	b := bytes.ReplaceAll(out.Materialize(), []byte(placeholder), []byte("\xff\xfe\xc0\xae\xff\xfe\xc0\xae\xff\xfe\xc0\xae"))
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (corrupting) Unmarshal(data mem.BufferSlice, v any) error {
	return encoding.GetCodecV2(proto.Name).Unmarshal(data, v)
}

// TestCheckTokenNotUTF8: a static value_file that comes to hold bytes that
// are not UTF-8 cannot go into a CheckResponse (protobuf-go refuses to
// marshal it). config refuses such a file at load; one rewritten while
// serving gets a 503 decision, never an INTERNAL error.
func TestCheckTokenNotUTF8(t *testing.T) {
	l := startListeners(t)
	file := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(file, []byte("key-ok"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := staticDecider(t, newTokens(t), `
credentials:
  v1: {type: static, value_file: `+file+`, header: X-Api-Key, format: '{token}'}
`+pathsYAML)
	if err != nil {
		t.Fatal(err)
	}
	l.cur.Store(f)
	if err := os.WriteFile(file, []byte("key-\xff\xfe-not-utf8"), 0o600); err != nil {
		t.Fatal(err)
	}
	resp, err := l.grpc.Check(context.Background(), checkReq("api.example.com", "/v1"))
	if err != nil {
		t.Fatalf("Check: %v, want a decision", err)
	}
	d := resp.GetDeniedResponse()
	if d == nil || d.GetStatus().GetCode() != 503 {
		t.Fatalf("rewritten value_file not UTF-8: %v, want a 503 denial", resp)
	}
}

// TestCheckBounds: host and path bounds answered with 403 decisions over
// real gRPC; a 1 MB host costs no route lookup (filter tests count it);
// over MaxCheckRequestBytes gRPC itself refuses the message.
func TestCheckBounds(t *testing.T) {
	l := startListeners(t)
	f, err := staticDecider(t, newTokens(t), "default_action: allow\n"+staticCredentials(t, "v1")+pathsYAML+`  - {host: "*.example.org", credential: v1}
`)
	if err != nil {
		t.Fatal(err)
	}
	l.cur.Store(f)
	ctx := context.Background()
	denied(t, must(l.grpc.Check(ctx, checkReq(strings.Repeat("a.", 1<<19)+"example.org", "/"))), 403, filter.ReasonHostTooLong)
	denied(t, must(l.grpc.Check(ctx, checkReq("api.example.com", "/v1/"+strings.Repeat("x", filter.MaxPathBytes)))), 403, filter.ReasonPathTooLong)
	// Many header_map entries (encode_raw_headers) up to the message bound: a decision.
	req := grpcSpellings("api.example.com", "/v1")["header_map"]
	for i := 0; i < 20000; i++ {
		req.Attributes.Request.Http.HeaderMap.Headers = append(req.Attributes.Request.Http.HeaderMap.Headers,
			&corev3.HeaderValue{Key: "x-filler", RawValue: bytes.Repeat([]byte("y"), 100)})
	}
	if resp := must(l.grpc.Check(ctx, req)); len(resp.GetOkResponse().GetHeaders()) != 1 {
		t.Fatalf("2 MB of headers: %v", resp.GetStatus())
	}
	big := checkReq("api.example.com", "/v1")
	big.Attributes.Request.Http.Body = strings.Repeat("b", envoy.MaxCheckRequestBytes)
	if _, err := l.grpc.Check(ctx, big); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("over MaxCheckRequestBytes: %v", err)
	}

	// The forward-auth listener applies the same host bound.
	code, h := l.rawHTTP(t, "GET", "/nginx", "Host", strings.Repeat("a", 300)+".example.org", "X-Original-URI", "/")
	if code != 403 || h.Get(filter.ReasonHeader) != filter.ReasonHostTooLong {
		t.Fatalf("forward-auth long host: %d %v", code, h)
	}
}
