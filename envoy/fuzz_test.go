package envoy_test

import (
	"context"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
	"github.com/tokenbroker/tokenbroker/envoy"
	"github.com/tokenbroker/tokenbroker/filter"
)

// fixedSource stands in for an IdP: the fuzzer exercises request handling,
// not the network.
type fixedSource struct{}

func (fixedSource) Token(context.Context) (credential.Token, error) {
	now := time.Now()
	return credential.Token{Value: "fuzz-token", Type: "Bearer", Issued: now, Expiry: now.Add(time.Hour)}, nil
}

// fixedYAML routes billing.example.com/v1 (GET) to a credential whose
// source is fixedSource; tests append routes to it.
const fixedYAML = `
credentials:
  billing:
    token_url: https://idp.example.com/oauth/token
    client_id: c
    client_secret: s
routes:
  - host: billing.example.com
    path_prefix: /v1
    methods: [GET]
    credential: billing
`

// offlineDecider compiles yaml into a filter whose every credential is
// answered by fixedSource: request handling in process, no IdP.
func offlineDecider(tb testing.TB, yaml string) *envoy.Current {
	tb.Helper()
	cfg, err := config.Parse("offline.yaml", []byte(yaml))
	if err != nil {
		tb.Fatal(err)
	}
	tokens, err := cache.New(cache.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(tokens.Close)
	sources := map[string]credential.Source{}
	for name := range cfg.Credentials {
		sources[name] = fixedSource{}
	}
	flt, err := filter.New(cfg, sources, tokens, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	var cur envoy.Current
	cur.Store(flt)
	return &cur
}

// FuzzCheck feeds arbitrary CheckRequests (as wire bytes, and as plain
// fields) through request extraction, routing and response building.
func FuzzCheck(f *testing.F) {
	cur := offlineDecider(f, fixedYAML+`  - host: "*.example.org"
    credential: billing
`)
	srv := envoy.NewAuthorizationServer(cur)

	seed, _ := proto.Marshal(checkReq("billing.example.com", "/v1/x"))
	f.Add(seed, "billing.example.com", "/v1", "GET", "")
	f.Add([]byte{}, "a.example.org:80", "/", "POST", "billing")
	f.Add([]byte{0x0a, 0x02, 0x0a, 0x00}, "[::1", "?", "", "nope")

	f.Fuzz(func(t *testing.T, wire []byte, host, path, method, cred string) {
		req := &authv3.CheckRequest{}
		if proto.Unmarshal(wire, req) != nil {
			req = checkReq(host, path)
			req.Attributes.Request.Http.Method = method
			if cred != "" {
				req.Attributes.ContextExtensions = map[string]string{"credential": cred}
			}
		}
		resp, err := srv.Check(context.Background(), req)
		if err != nil || resp == nil {
			t.Fatalf("Check returned %v, %v", resp, err)
		}
		if ok := resp.GetOkResponse(); ok != nil {
			for _, h := range ok.GetHeaders() {
				if h.GetHeader().GetValue() != "Bearer fuzz-token" || h.GetAppend().GetValue() {
					t.Fatalf("bad injected header %v", h)
				}
			}
			return
		}
		d := resp.GetDeniedResponse()
		if code := d.GetStatus().GetCode(); code != 403 && code != 503 {
			t.Fatalf("denial status %d", code)
		}
		if strings.Contains(resp.String(), "fuzz-token") {
			t.Fatal("token in a denial")
		}
	})
}
