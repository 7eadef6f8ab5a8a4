package credential_test

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
	"github.com/tokenbroker/tokenbroker/envoy"
	"github.com/tokenbroker/tokenbroker/filter"
)

const (
	oidcResource = "https://api.interop.example"
	oidcTTL      = 120 // seconds: short-lived JWT access tokens
)

// needBinary fails under CI and skips elsewhere when a peer is missing.
func needPeer(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing (run .ci/install-deps)", what)
	}
	t.Skipf("%s is missing (run .ci/install-deps)", what)
}

// oidcProvider is a running oidc-provider (testdata/oidc/server.js).
type oidcProvider struct {
	issuer string
}

// startOIDC starts oidc-provider on a free loopback port with these clients.
func startOIDC(t *testing.T, clients []map[string]any) *oidcProvider {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		needPeer(t, "node")
	}
	dir, _ := filepath.Abs("testdata/oidc")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "oidc-provider")); err != nil {
		needPeer(t, "oidc-provider (npm ci in credential/testdata/oidc)")
	}
	cfgFile := filepath.Join(t.TempDir(), "oidc.json")
	b, _ := json.Marshal(map[string]any{"resource": oidcResource, "ttl": oidcTTL, "clients": clients})
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, "server.js", cfgFile)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NODE_ENV=test")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })

	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if l, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
				line <- l
			}
		}
	}()
	select {
	case issuer := <-line:
		return &oidcProvider{issuer: issuer}
	case <-exited:
		t.Fatalf("oidc-provider exited: %s", stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("oidc-provider did not start: %s", stderr.String())
	}
	return nil
}

func (p *oidcProvider) getJSON(t *testing.T, path string, v any) {
	t.Helper()
	res, err := http.Get(p.issuer + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// issued is how many access tokens the provider issued to clientID.
func (p *oidcProvider) issued(t *testing.T, clientID string) int {
	var c struct{ Issued int }
	p.getJSON(t, "/_count?client_id="+clientID, &c)
	return c.Issued
}

// verify checks a JWT access token against the provider's JWKS and returns its claims.
func (p *oidcProvider) verify(t *testing.T, token string) map[string]any {
	t.Helper()
	var ks jose.JSONWebKeySet
	p.getJSON(t, "/jwks", &ks)
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("access token is not a JWT: %v", err)
	}
	var std jwt.Claims
	all := map[string]any{}
	if err := tok.Claims(&ks, &std, &all); err != nil {
		t.Fatalf("access token does not verify against the provider's JWKS: %v", err)
	}
	if err := std.ValidateWithLeeway(jwt.Expected{Issuer: p.issuer, AnyAudience: jwt.Audience{oidcResource}, Time: time.Now()}, 0); err != nil {
		t.Fatalf("claims: %v", err)
	}
	if got := std.Expiry.Time().Sub(std.IssuedAt.Time()); got != oidcTTL*time.Second {
		t.Errorf("lifetime %s, want %ds", got, oidcTTL)
	}
	return all
}

func writePEM(t *testing.T, dir, name string, key crypto.Signer) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func publicJWK(t *testing.T, key crypto.Signer, kid string) map[string]any {
	t.Helper()
	b, err := jose.JSONWebKey{Key: key.Public(), KeyID: kid, Use: "sig"}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

// broker is tokenbroker's Check path in process: config → sources → cache → filter → envoy.
type broker struct {
	as     *envoy.AuthorizationServer
	tokens *cache.Tokens
	logs   *observer.ObservedLogs
}

func newBroker(t *testing.T, yaml string) *broker {
	t.Helper()
	cfg, err := config.Parse("interop.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(core)
	tokens, err := cache.New(cache.Options{ExpiryMargin: 10 * time.Second, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tokens.Close)
	sources := map[string]credential.Source{}
	for name, c := range cfg.Credentials {
		src, err := credential.FromConfig(c, nil)
		if err != nil {
			t.Fatal(err)
		}
		sources[name] = src
	}
	f, err := filter.New(cfg, sources, tokens, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	var cur envoy.Current
	cur.Store(f)
	return &broker{as: envoy.NewAuthorizationServer(&cur), tokens: tokens, logs: logs}
}

func (b *broker) check(t *testing.T, host string) *authv3.CheckResponse {
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Host: host, Path: "/", Method: "GET"}},
	}}
	resp, err := b.as.Check(context.Background(), req)
	if err != nil {
		t.Error(err)
		return nil
	}
	return resp
}

// bearer returns the injected token, or "" with the denial's reason.
func bearer(resp *authv3.CheckResponse) (string, string) {
	if ok := resp.GetOkResponse(); ok != nil && len(ok.GetHeaders()) == 1 {
		v, _ := strings.CutPrefix(ok.GetHeaders()[0].GetHeader().GetValue(), "Bearer ")
		return v, ""
	}
	d := resp.GetDeniedResponse()
	reason := ""
	for _, h := range d.GetHeaders() {
		reason = h.GetHeader().GetValue()
	}
	return "", fmt.Sprintf("%d %s", d.GetStatus().GetCode(), reason)
}

// TestOIDCProviderInterop runs every client authentication method against
// the certified OpenID provider oidc-provider.
func TestOIDCProviderInterop(t *testing.T) {
	dir := t.TempDir()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	wrongKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaFile, ecFile, wrongFile := writePEM(t, dir, "rsa.pem", rsaKey), writePEM(t, dir, "ec.pem", ecKey), writePEM(t, dir, "wrong.pem", wrongKey)
	const secret = "interop-secret-0123456789abcdef0123456789abcdef0123456789abcdef"

	client := func(id, method string, extra map[string]any) map[string]any {
		c := map[string]any{
			"client_id": id, "grant_types": []string{"client_credentials"}, "redirect_uris": []string{},
			"response_types": []string{}, "token_endpoint_auth_method": method, "scope": "read write",
		}
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	jwks := map[string]any{"keys": []any{publicJWK(t, rsaKey, "rsa-1"), publicJWK(t, ecKey, "ec-1")}}
	op := startOIDC(t, []map[string]any{
		client("tb-basic", "client_secret_basic", map[string]any{"client_secret": secret}),
		client("tb-post", "client_secret_post", map[string]any{"client_secret": secret}),
		client("tb-secret-jwt", "client_secret_jwt", map[string]any{"client_secret": secret, "token_endpoint_auth_signing_alg": "HS256"}),
		client("tb-pkjwt-rs256", "private_key_jwt", map[string]any{"jwks": jwks, "token_endpoint_auth_signing_alg": "RS256"}),
		client("tb-pkjwt-ps256", "private_key_jwt", map[string]any{"jwks": jwks, "token_endpoint_auth_signing_alg": "PS256"}),
		client("tb-pkjwt-es256", "private_key_jwt", map[string]any{"jwks": jwks, "token_endpoint_auth_signing_alg": "ES256"}),
	})

	for _, tc := range []struct {
		method, client, auth, wrongAuth string
	}{
		{"client_secret_basic", "tb-basic", "client_secret: " + secret, "client_secret: wrong-" + secret},
		{"client_secret_post", "tb-post", "client_secret: " + secret, "client_secret: wrong-" + secret},
		{"client_secret_jwt", "tb-secret-jwt", "client_secret: " + secret, "client_secret: wrong-" + secret},
		{"private_key_jwt RS256", "tb-pkjwt-rs256", "private_key_file: " + rsaFile + "\n    key_id: rsa-1\n    signing_alg: RS256", "private_key_file: " + wrongFile + "\n    key_id: ec-1"},
		{"private_key_jwt PS256", "tb-pkjwt-ps256", "private_key_file: " + rsaFile + "\n    key_id: rsa-1\n    signing_alg: PS256", "private_key_file: " + wrongFile + "\n    key_id: ec-1"},
		{"private_key_jwt ES256", "tb-pkjwt-es256", "private_key_file: " + ecFile + "\n    key_id: ec-1", "private_key_file: " + wrongFile + "\n    key_id: ec-1"},
	} {
		t.Run(tc.method, func(t *testing.T) {
			auth := strings.Fields(tc.method)[0]
			yaml := fmt.Sprintf(`credentials:
  good:
    token_url: %[1]s/token
    client_id: %[2]s
    auth_method: %[3]s
    %[4]s
    scopes: [read]
    resource: %[6]s
routes:
  - {host: good.example.com, credential: good}
`, op.issuer, tc.client, auth, tc.auth, tc.wrongAuth, oidcResource)
			b := newBroker(t, yaml)
			// The wrong secret or key in a broker of its own: a credential's
			// cache identity leaves the secret out on purpose (rotation keeps
			// the cached token), so beside "good" it would share its token.
			bad := newBroker(t, strings.NewReplacer("good", "bad", tc.auth, tc.wrongAuth).Replace(yaml))

			// 500 concurrent cold Checks share one mint.
			const n = 500
			toks, denials := make([]string, n), make([]string, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					if resp := b.check(t, "good.example.com"); resp != nil {
						toks[i], denials[i] = bearer(resp)
					}
				})
			}
			wg.Wait()
			for i, tok := range toks {
				if tok == "" || tok != toks[0] {
					var first any
					if es := b.logs.FilterMessage("mint failed").All(); len(es) > 0 {
						first = es[0].ContextMap()["error"]
					}
					t.Fatalf("check %d got a different or no token (denial %q); mint error: %v", i, denials[i], first)
				}
			}
			if got := op.issued(t, tc.client); got != 1 {
				t.Fatalf("%d concurrent cold Checks: provider issued %d tokens, want 1", n, got)
			}
			claims := op.verify(t, toks[0])
			if claims["client_id"] != tc.client || claims["scope"] != "read" {
				t.Fatalf("claims client_id=%v scope=%v", claims["client_id"], claims["scope"])
			}
			t.Logf("%s: 1 token for %d Checks; verified against JWKS: iss=%v aud=%v client_id=%v scope=%v", tc.method, n, claims["iss"], claims["aud"], claims["client_id"], claims["scope"])

			// A wrong secret or key: a 503 denial and an error naming the
			// credential and the provider's error code, without the secret.
			tok, denial := bearer(bad.check(t, "bad.example.com"))
			if tok != "" || denial != "503 token unavailable" {
				t.Fatalf("wrong credentials: token %v, denial %q", tok != "", denial)
			}
			entries := bad.logs.FilterMessage("no token for request").All()
			if len(entries) != 1 {
				t.Fatalf("%d denial log lines", len(entries))
			}
			msg := fmt.Sprint(entries[0].ContextMap()["error"])
			if !strings.Contains(msg, `credential "bad"`) || !strings.Contains(msg, "invalid_client") {
				t.Fatalf("error does not name the credential and the IdP's error code: %s", msg)
			}
			if strings.Contains(msg, secret) {
				t.Fatal("the error carries the secret")
			}
			t.Logf("%s with wrong credentials: 503, %s", tc.method, msg)
		})
	}
}
