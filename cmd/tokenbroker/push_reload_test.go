package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/testcerts"
)

func startInProcess(t *testing.T, path string) (*assembly, *logBuffer) {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	a, err := start(cfg, zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(logs), zapcore.DebugLevel)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.stop)
	return a, logs
}

// TestReloadListenTLSEndsSDSStreamsOfTheOldServer: a reload that replaces
// listen.tls's client CA retires the gRPC server. The SDS stream a client
// certificate of the old CA opened through it ends at once (not at the end
// of shutdown.drain), while a Check in flight on that server finishes
// normally; a new stream under the new policy is judged by it: the old
// CA's certificate gets nothing, the new CA's gets the value.
func TestReloadListenTLSEndsSDSStreamsOfTheOldServer(t *testing.T) {
	dir := t.TempDir()
	serverCA, oldCA, newCA := testcerts.NewCA(t, "server-ca"), testcerts.NewCA(t, "old-client-ca"), testcerts.NewCA(t, "new-client-ca")
	cert, key := serverCA.IssueFiles(t, dir, "server", "tokenbroker", false)
	oldCAFile, newCAFile := filepath.Join(dir, "old-ca.crt"), filepath.Join(dir, "new-ca.crt")
	testcerts.Write(t, oldCAFile, oldCA.PEM(), time.Now())
	testcerts.Write(t, newCAFile, newCA.PEM(), time.Now())

	// The IdP holds svc-b's first token request until released: a Check
	// in flight across the reload.
	idp := devidp.New(devidp.Options{Clients: idpClients, Lifetime: time.Hour})
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	idpSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _, basic := r.BasicAuth()
		if !basic && r.ParseForm() == nil {
			id = r.PostForm.Get("client_id")
		}
		if id == "svc-b" {
			select {
			case arrived <- struct{}{}:
				<-release
			default:
			}
		}
		idp.ServeHTTP(w, r)
	}))
	defer idpSrv.Close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()

	body := func(clientCAFile string) string {
		return "listen:\n  grpc: 127.0.0.1:0\n  admin: 127.0.0.1:0\n  tls:\n    cert_file: " + cert + "\n    key_file: " + key +
			"\n    client_ca_file: " + clientCAFile + "\ncredentials:\n" + cred("a", idpSrv.URL) + cred("b", idpSrv.URL) +
			"routes:\n  - host: b.example.com\n    credential: b\nshutdown:\n  drain: 2m\n"
	}
	path := write(t, "tb.yaml", body(oldCAFile))
	a, logs := startInProcess(t, path)
	addr := a.grpc.addr().String()

	dialAs := func(ca *testcerts.CA) *grpc.ClientConn {
		t.Helper()
		certPEM, keyPEM := ca.IssueSPIFFE(t, "spiffe://example.org/egress")
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			RootCAs: serverCA.Pool(), ServerName: "localhost", Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a failure guard
	defer cancel()
	oldConn := dialAs(oldCA)
	st, err := openSDS(ctx, oldConn, "a")
	if err != nil {
		t.Fatal(err)
	}
	if v, err := st.next(); err != nil || !strings.HasPrefix(v, "Bearer ") {
		t.Fatalf("subscribe under the old policy: %q %v", v, err)
	}
	checked := make(chan error, 1)
	go func() {
		resp, err := authv3.NewAuthorizationClient(oldConn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Host: "b.example.com", Path: "/", Method: "GET"}},
		}})
		if err == nil && len(resp.GetOkResponse().GetHeaders()) != 1 {
			err = fmt.Errorf("no header injected: %v", resp)
		}
		checked <- err
	}()
	select {
	case <-arrived: // the Check waits on the IdP, in flight on the old server
	case <-ctx.Done():
		t.Fatal("the Check never reached the IdP")
	}

	replaceFile(t, path, body(newCAFile))
	if r, err := a.reload(path, "test"); r != reloadApplied || err != nil {
		t.Fatalf("reload: %s %v\n%s", r, err, logs)
	}
	// The SDS stream ends now, with the Check still in flight and the
	// drain (2m) far from over.
	if _, err := st.next(); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "replaced by a reload") {
		t.Fatalf("the old server's SDS stream ended with %v, want Unavailable (replaced by a reload)", err)
	}
	select {
	case err := <-checked:
		t.Fatalf("the Check in flight ended before its token came: %v", err)
	default:
	}
	close(release)
	if err := <-checked; err != nil {
		t.Fatalf("the Check in flight on the retired server: %v", err)
	}

	// New streams are judged by the new policy.
	if st, err := openSDS(ctx, dialAs(oldCA), "a"); err == nil {
		if v, err := st.next(); err == nil {
			t.Fatalf("a certificate of the removed client CA got %q", v)
		}
	}
	st, err = openSDS(ctx, dialAs(newCA), "a")
	if err != nil {
		t.Fatal(err)
	}
	if v, err := st.next(); err != nil || !strings.HasPrefix(v, "Bearer ") {
		t.Fatalf("subscribe under the new policy: %q %v", v, err)
	}
	if strings.Contains(logs.String(), "drain deadline passed") {
		t.Fatal("the drain reached its deadline")
	}
	if n := idp.MintsFor("svc-a"); n != 1 {
		t.Fatalf("svc-a minted %d times across the TLS change, want 1", n)
	}
}

// TestReloadExpiryMarginRetimesPushFeeds: a reload raising
// cache.expiry_margin past what is left of the subscribed token's life
// pushes a new token to the subscriber (after, at most, the fail-closed
// value), without a Check: push mode re-times its feeds once the cache has
// the new settings.
func TestReloadExpiryMarginRetimesPushFeeds(t *testing.T) {
	idp := devidp.New(devidp.Options{Clients: idpClients, Lifetime: 2 * time.Minute})
	idpSrv := httptest.NewServer(idp)
	defer idpSrv.Close()
	body := func(margin string) string {
		return "listen:\n  grpc: 127.0.0.1:0\n  admin: 127.0.0.1:0\ncredentials:\n" + cred("a", idpSrv.URL) +
			"routes:\n  - host: a.example.com\n    credential: a\ncache:\n  expiry_margin: " + margin + "\n"
	}
	path := write(t, "tb.yaml", body("10s"))
	a, logs := startInProcess(t, path)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a failure guard
	defer cancel()
	st, err := openSDS(ctx, dial(t, a.grpc.addr().String()), "a")
	if err != nil {
		t.Fatal(err)
	}
	first, err := st.next()
	if err != nil || !strings.HasPrefix(first, "Bearer ") {
		t.Fatalf("subscribe: %q %v", first, err)
	}
	idp.SetLifetime(time.Hour)

	// Under a 2m margin the 2m token is past its usable end already.
	replaceFile(t, path, body("2m"))
	if r, err := a.reload(path, "test"); r != reloadApplied || err != nil {
		t.Fatalf("reload: %s %v\n%s", r, err, logs)
	}
	v, err := st.next()
	if err == nil && v == "" { // the fail-closed value, then the new token
		v, err = st.next()
	}
	if err != nil || v == first || !strings.HasPrefix(v, "Bearer ") {
		t.Fatalf("after the margin passed the token's life: %q %v, want a new token\n%s", v, err, logs)
	}
	if n := idp.MintsFor("svc-a"); n != 2 {
		t.Fatalf("%d mints, want 2", n)
	}
}
