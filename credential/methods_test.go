package credential_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
	"github.com/tokenbroker/tokenbroker/internal/testcerts"
)

// testCA issues certificates for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

var serialMu sync.Mutex
var serialN int64

func nextSerial() *big.Int {
	serialMu.Lock()
	defer serialMu.Unlock()
	serialN++
	return big.NewInt(serialN)
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: "test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert, key}
}

func (c *testCA) pem() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw})
}

func (c *testCA) issue(t *testing.T, cn string, eku x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{eku},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// writeAt writes a file with a given modification time, as a rotation would
// (distinct mtimes without sleeping).
func writeAt(t *testing.T, path string, b []byte, mod time.Time) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mod, mod); err != nil {
		t.Fatal(err)
	}
}

func tokenJSON(w http.ResponseWriter, tok string, extra map[string]any) {
	m := map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 300}
	for k, v := range extra {
		m[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(m)
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

// TestTLSClientAuth runs tls_client_auth (RFC 8705) against a local TLS
// token endpoint that requires a client certificate of its CA.
func TestTLSClientAuth(t *testing.T) {
	dir := t.TempDir()
	idpCA, clientCA, otherCA := newTestCA(t), newTestCA(t), newTestCA(t)
	srvCert, srvKey := idpCA.issue(t, "idp", x509.ExtKeyUsageServerAuth)
	pair, err := tls.X509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(clientCA.cert)
	var mu sync.Mutex
	var seenCN []string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cn := r.TLS.PeerCertificates[0].Subject.CommonName
		mu.Lock()
		seenCN = append(seenCN, cn)
		mu.Unlock()
		if r.PostFormValue("client_id") != "mtls-app" || r.PostFormValue("grant_type") != "client_credentials" || r.Header.Get("Authorization") != "" || r.PostFormValue("client_secret") != "" {
			oauthError(w, 400, "invalid_request", "unexpected parameters")
			return
		}
		tokenJSON(w, "mtls-token-for-"+cn, nil)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	defer srv.Close()

	caFile, certFile, keyFile := filepath.Join(dir, "idp-ca.pem"), filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	t0 := time.Now().Add(-time.Minute)
	writeAt(t, caFile, idpCA.pemBytes(), t0)
	c, k := clientCA.issue(t, "client-1", x509.ExtKeyUsageClientAuth)
	writeAt(t, certFile, c, t0)
	writeAt(t, keyFile, k, t0)
	cfg := &config.Credential{Name: "mtls", Type: "client_credentials", TokenURL: srv.URL + "/token", ClientID: "mtls-app",
		AuthMethod: "tls_client_auth", ClientCertFile: certFile, ClientKeyFile: keyFile, CAFile: caFile}
	src, err := credential.FromConfig(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := src.Token(context.Background())
	if err != nil || tok.Value != "mtls-token-for-client-1" {
		t.Fatalf("token %q, err %v", tok.Value, err)
	}

	// Rotation: the next mint presents the new certificate, no restart.
	c, k = clientCA.issue(t, "client-2", x509.ExtKeyUsageClientAuth)
	writeAt(t, certFile, c, t0.Add(time.Second))
	writeAt(t, keyFile, k, t0.Add(time.Second))
	if tok, err = src.Token(context.Background()); err != nil || tok.Value != "mtls-token-for-client-2" {
		t.Fatalf("after rotation: token %q, err %v", tok.Value, err)
	}

	// A certificate from another CA is refused at the handshake.
	wrongCert, wrongKey := filepath.Join(dir, "wrong.crt"), filepath.Join(dir, "wrong.key")
	c, k = otherCA.issue(t, "intruder", x509.ExtKeyUsageClientAuth)
	writeAt(t, wrongCert, c, t0)
	writeAt(t, wrongKey, k, t0)
	wrong := *cfg
	wrong.ClientCertFile, wrong.ClientKeyFile = wrongCert, wrongKey
	ws, err := credential.FromConfig(&wrong, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ws.Token(context.Background()); err == nil {
		t.Fatal("a certificate of an unknown CA got a token")
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(seenCN, ",") != "client-1,client-2" {
		t.Fatalf("endpoint saw %v", seenCN)
	}
}

func (c *testCA) pemBytes() []byte { return c.pem() }

// TestTokenExchange runs RFC 8693 against a local endpoint that checks the
// exchange parameters and the subject token, and rotates the subject token file.
func TestTokenExchange(t *testing.T) {
	dir := t.TempDir()
	subject := filepath.Join(dir, "sa-token")
	writeAt(t, subject, []byte("k8s-sa-token-1\n"), time.Now())
	valid := map[string]string{"k8s-sa-token-1": "exchanged-1", "k8s-sa-token-2": "exchanged-2"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, sec, ok := r.BasicAuth()
		want := map[string]string{
			"grant_type":           credential.GrantTokenExchange,
			"subject_token_type":   config.TokenTypeJWT,
			"requested_token_type": config.TokenTypeAccessToken,
			"audience":             "payments-api",
			"resource":             "https://payments.example.com",
			"scope":                "pay:write",
		}
		for k, v := range want {
			if got := r.PostFormValue(k); got != v {
				oauthError(w, 400, "invalid_request", k+" is "+got)
				return
			}
		}
		if !ok || id != "sts-client" || sec != "sts-secret" {
			oauthError(w, 401, "invalid_client", "bad client")
			return
		}
		out, ok := valid[r.PostFormValue("subject_token")]
		if !ok {
			oauthError(w, 400, "invalid_grant", "subject token rejected")
			return
		}
		tokenJSON(w, out, map[string]any{"issued_token_type": config.TokenTypeAccessToken, "token_type": "N_A"})
	}))
	defer srv.Close()
	cfg, err := config.Parse("x.yaml", []byte(fmt.Sprintf(`credentials:
  pay:
    type: token_exchange
    token_url: %s/token
    subject_token_file: %s
    requested_token_type: %s
    audience: payments-api
    resource: https://payments.example.com
    scopes: [pay:write]
    client_id: sts-client
    client_secret: sts-secret
`, srv.URL, subject, config.TokenTypeAccessToken)))
	if err != nil {
		t.Fatal(err)
	}
	src, err := credential.FromConfig(cfg.Credentials["pay"], nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := src.Token(context.Background())
	if err != nil || tok.Value != "exchanged-1" {
		t.Fatalf("token %q, err %v", tok.Value, err)
	}
	// The kubelet rotates the projected token: the next mint uses it.
	writeAt(t, subject, []byte("k8s-sa-token-2\n"), time.Now().Add(time.Second))
	if tok, err = src.Token(context.Background()); err != nil || tok.Value != "exchanged-2" {
		t.Fatalf("after rotation: token %q, err %v", tok.Value, err)
	}
	// A rejected subject token: the IdP's code, never the subject token.
	writeAt(t, subject, []byte("k8s-sa-token-revoked"), time.Now().Add(2*time.Second))
	_, err = src.Token(context.Background())
	if err == nil || !strings.Contains(err.Error(), "invalid_grant") || strings.Contains(err.Error(), "k8s-sa-token-revoked") {
		t.Fatalf("err %v", err)
	}
}

// TestJWTBearerAndKeyRotation: the jwt_bearer grant with its assertion from a
// file, authenticated with private_key_jwt, and a rotated key file.
func TestJWTBearerAndKeyRotation(t *testing.T) {
	dir := t.TempDir()
	assertion := filepath.Join(dir, "assertion.jwt")
	writeAt(t, assertion, []byte("upstream-assertion"), time.Now())
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keyFile := filepath.Join(dir, "key.pem")
	writeKey := func(k *ecdsa.PrivateKey, mod time.Time) {
		der, _ := x509.MarshalECPrivateKey(k)
		writeAt(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), mod)
	}
	writeKey(k1, time.Now())
	keys := map[string]*ecdsa.PublicKey{"k1": &k1.PublicKey, "k2": &k2.PublicKey}
	var mu sync.Mutex
	jtis := map[string]bool{}
	var srvURL string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.PostFormValue("grant_type") != credential.GrantJWTBearer || r.PostFormValue("assertion") != "upstream-assertion" ||
			r.PostFormValue("client_assertion_type") != credential.ClientAssertionType {
			oauthError(w, 400, "invalid_request", "bad grant")
			return
		}
		ca, err := jwt.ParseSigned(r.PostFormValue("client_assertion"), []jose.SignatureAlgorithm{jose.ES256})
		if err != nil || len(ca.Headers) != 1 {
			oauthError(w, 401, "invalid_client", "not a JWS")
			return
		}
		var cl jwt.Claims
		pub, ok := keys[ca.Headers[0].KeyID]
		if !ok || ca.Claims(pub, &cl) != nil {
			oauthError(w, 401, "invalid_client", "signature")
			return
		}
		if err := cl.Validate(jwt.Expected{Issuer: "bearer-app", Subject: "bearer-app", AnyAudience: jwt.Audience{srvURL + "/token"}, Time: time.Now()}); err != nil {
			oauthError(w, 401, "invalid_client", err.Error())
			return
		}
		mu.Lock()
		replay := jtis[cl.ID]
		jtis[cl.ID] = true
		mu.Unlock()
		if replay || cl.Expiry.Time().Sub(cl.IssuedAt.Time()) > 5*time.Minute {
			oauthError(w, 401, "invalid_client", "replayed or long-lived assertion")
			return
		}
		tokenJSON(w, "bearer-token-"+ca.Headers[0].KeyID, nil)
	}))
	defer srv.Close()
	srvURL = srv.URL
	cfg := &config.Credential{Name: "b", Type: "jwt_bearer", TokenURL: srv.URL + "/token", AssertionFile: assertion,
		ClientID: "bearer-app", AuthMethod: "private_key_jwt", PrivateKeyFile: keyFile, KeyID: "k1"}
	src, err := credential.FromConfig(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // a fresh jti each time
		if tok, err := src.Token(context.Background()); err != nil || tok.Value != "bearer-token-k1" {
			t.Fatalf("token %q, err %v", tok.Value, err)
		}
	}
	// Rotating the key file (with kid k2 published at the IdP): the kid is
	// configuration, so the operator changes it with the key; here the old
	// kid with the new key must fail, proving the new key is used at once.
	writeKey(k2, time.Now().Add(time.Second))
	_, err = src.Token(context.Background())
	if err == nil || !strings.Contains(err.Error(), "invalid_client") {
		t.Fatalf("key rotation not picked up: %v", err)
	}
	cfg.KeyID = "k2"
	src2, err := credential.FromConfig(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok, err := src2.Token(context.Background()); err != nil || tok.Value != "bearer-token-k2" {
		t.Fatalf("token %q, err %v", tok.Value, err)
	}
}

func TestStatic(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "api-key")
	writeAt(t, f, []byte("key-1\n"), time.Now().Add(-time.Minute))
	src, err := credential.FromConfig(&config.Credential{Name: "k", Type: "static", ValueFile: f}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := src.Token(context.Background())
	if err != nil || tok.Value != "key-1" || tok.Lifetime() != credential.StaticLifetime {
		t.Fatalf("token %q lifetime %s, err %v", tok.Value, tok.Lifetime(), err)
	}
	now := time.Now()
	st := src.(*credential.Static)
	st.Now = func() time.Time { return now }
	if st.Changed() {
		t.Fatal("unchanged file reported as changed")
	}
	writeAt(t, f, []byte("key-2-longer\n"), time.Now())
	if st.Changed() {
		t.Fatal("Changed looked at the file twice within a second")
	}
	now = now.Add(2 * time.Second)
	if !st.Changed() {
		t.Fatal("a changed value file was not noticed")
	}
	if tok, _ = src.Token(context.Background()); tok.Value != "key-2-longer" {
		t.Fatalf("after change: %q", tok.Value)
	}
	t.Setenv("TB_API_KEY", "from-env")
	env, err := credential.FromConfig(&config.Credential{Name: "e", Type: "static", Value: config.Secret(os.Getenv("TB_API_KEY"))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok, _ := env.Token(context.Background()); tok.Value != "from-env" || env.(credential.Changer).Changed() {
		t.Fatalf("env value %q", tok.Value)
	}
}

// TestStaticValueFileBounded: a value file that grows past
// config.MaxHeaderValue, or gains a control character, after the
// configuration was checked fails the read instead of becoming the header.
func TestStaticValueFileBounded(t *testing.T) {
	f := filepath.Join(t.TempDir(), "api-key")
	writeAt(t, f, bytes.Repeat([]byte("k"), config.MaxHeaderValue), time.Now())
	src, err := credential.FromConfig(&config.Credential{Name: "k", Type: "static", ValueFile: f, Format: "{token}"}, nil)
	if err != nil {
		t.Fatalf("a value at the bound: %v", err)
	}
	for _, bad := range [][]byte{bytes.Repeat([]byte("k"), config.MaxHeaderValue+1), []byte("key\r\nX-Injected: 1")} {
		writeAt(t, f, bad, time.Now())
		tok, err := src.Token(context.Background())
		if err == nil || tok.Value != "" {
			t.Fatalf("a bad value file (%d bytes) was served: %v", len(bad), err)
		}
		if strings.Contains(err.Error(), "kkkk") || strings.Contains(err.Error(), "Injected") {
			t.Fatalf("the error quotes the value: %v", err)
		}
	}
}

// TestPrivateKeyJWTCertificateThumbprint: with certificate_file the client
// assertion carries x5t and x5t#S256 (Entra ID's certificate credentials).
func TestPrivateKeyJWTCertificateThumbprint(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, "ca")
	certFile, keyFile := ca.IssueFiles(t, dir, "app", "app", true)
	certPEM, _ := os.ReadFile(certFile)
	blk, _ := pem.Decode(certPEM)
	s256 := sha256.Sum256(blk.Bytes)
	got := make(chan map[jose.HeaderKey]any, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ca, err := jwt.ParseSigned(r.PostFormValue("client_assertion"), []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			oauthError(w, 401, "invalid_client", "not a JWS")
			return
		}
		got <- ca.Headers[0].ExtraHeaders
		tokenJSON(w, "t", nil)
	}))
	defer srv.Close()
	src, err := credential.FromConfig(&config.Credential{Name: "entra", TokenURL: srv.URL, ClientID: "app",
		AuthMethod: "private_key_jwt", PrivateKeyFile: keyFile, CertificateFile: certFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := <-got
	if h["x5t#S256"] != base64.RawURLEncoding.EncodeToString(s256[:]) || h["x5t"] == nil {
		t.Fatalf("headers %v", h)
	}
}
