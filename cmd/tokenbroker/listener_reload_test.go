package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/testcerts"
)

// Broker clients of the listener and broker reload tests; their secrets
// must never reach a log.
var brokerClients = map[string]string{"cust-acme": "acme-secret-4471", "cust-cold": "cold-secret-9920",
	"cust-globex": "globex-secret-3318", "partner-initech": "initech-secret-6604"}

// reloadIdP is a dev IdP knowing the services and the broker clients, and a
// channel that receives one value per token request it gets.
func reloadIdP(t *testing.T) (*devidp.Server, string, chan struct{}) {
	t.Helper()
	clients := map[string]string{}
	for k, v := range idpClients {
		clients[k] = v
	}
	for k, v := range brokerClients {
		clients[k] = v
	}
	idp := devidp.New(devidp.Options{Clients: clients, Lifetime: time.Hour})
	arrived := make(chan struct{}, 1024)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case arrived <- struct{}{}:
		default:
		}
		idp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return idp, srv.URL, arrived
}

// listenersConfig serves credentials a and b on every listener, and a broker
// upstream for cust-* clients; listen gives the four addresses.
func listenersConfig(idp string, listen map[string]string, extra string) string {
	return fmt.Sprintf("listen:\n  grpc: %s\n  admin: %s\n  http: %s\n  broker: %s\n", listen["grpc"], listen["admin"], listen["http"], listen["broker"]) +
		"credentials:\n" + cred("a", idp) + cred("b", idp) +
		"routes:\n  - host: a.example.com\n    credential: a\n  - host: b.example.com\n    credential: b\n" +
		"broker:\n  upstreams:\n    - name: auth0\n      token_url: " + idp + "/oauth/token\n      client_ids: [\"cust-*\"]\n" + extra
}

func noBrokerSecrets(t *testing.T, logs string) {
	t.Helper()
	for _, s := range brokerClients {
		if strings.Contains(logs, s) {
			t.Fatalf("a broker client secret reached the logs:\n%s", logs)
		}
	}
}

// TestReloadMovesEachListenerUnderLoad changes one listener's address while
// a load runs against it: an invalid file is refused with FILE:LINE and the
// old listener keeps serving; then the new address is bound and serves
// before the old one closes, the load moves over with no request failing, a
// request in flight on the old listener finishes, the old address refuses
// connections afterwards, and no token is minted again.
func TestReloadMovesEachListenerUnderLoad(t *testing.T) {
	for _, name := range []string{"grpc", "http", "broker", "admin"} {
		t.Run(name, func(t *testing.T) { testListenerMove(t, name) })
	}
}

func testListenerMove(t *testing.T, name string) {
	idp, url, arrived := reloadIdP(t)
	listen := map[string]string{"grpc": "127.0.0.1:0", "admin": "127.0.0.1:0", "http": "127.0.0.1:0", "broker": "127.0.0.1:0"}
	path := write(t, "tb.yaml", listenersConfig(url, listen, ""))
	l := startLive(t, path, idp, url)
	lst := map[string]*listener{"grpc": &l.srv.grpc.listener, "http": &l.srv.forwardAuth.listener,
		"broker": &l.srv.brokerHTTP.listener, "admin": &l.srv.admin.listener}[name]
	hc := &http.Client{Transport: &http.Transport{}, Timeout: 20 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	g := &grpcChecks{t: t}
	brokerOK := func(addr, client string) error {
		if code, err := brokerToken(hc, addr, client, brokerClients[client], nil); err != nil || code != 200 {
			return fmt.Errorf("broker %s: %d %v", client, code, err)
		}
		return nil
	}
	var warm, cold func(addr string) error // cold: a request that has to reach the IdP
	switch name {
	case "grpc":
		warm = func(a string) error { return g.check(a, "a.example.com") }
		cold = func(a string) error { return g.check(a, "b.example.com") }
	case "http":
		warm = func(a string) error { return forwardAuth(hc, a, "a.example.com") }
		cold = func(a string) error { return forwardAuth(hc, a, "b.example.com") }
	case "broker":
		warm = func(a string) error { return brokerOK(a, "cust-acme") }
		cold = func(a string) error { return brokerOK(a, "cust-cold") }
	case "admin":
		warm = func(a string) error { return get(hc, "http://"+a+"/healthz") }
	}
	oldAddr := lst.addr().String()
	if err := warm(oldAddr); err != nil {
		t.Fatal(err)
	}

	// A request waiting in the IdP on the old listener when it moves.
	var inFlight chan error
	hang := make(chan struct{})
	if cold != nil {
		for len(arrived) > 0 {
			<-arrived
		}
		idp.SetHang(hang)
		inFlight = make(chan error, 1)
		go func() { inFlight <- cold(oldAddr) }()
		<-arrived
	}

	ld := startLoad(t, 4, 3000, oldAddr, warm)
	ld.await(50)

	// An invalid file: refused with FILE:LINE; the old listener keeps serving.
	listen[name] = "nowhere"
	replaceFile(t, path, listenersConfig(url, listen, ""))
	if r, err := l.srv.reload(path, "test"); r != reloadInvalid || err == nil {
		t.Fatalf("invalid file: %s %v", r, err)
	}
	want := regexp.QuoteMeta(path) + `:\d+: listen\.` + name + `: not a host:port address`
	if !regexp.MustCompile(want).MatchString(l.logs.String()) {
		t.Fatalf("log lacks %s:\n%s", want, l.logs)
	}
	ld.await(50)

	listen[name] = "localhost:0"
	replaceFile(t, path, listenersConfig(url, listen, ""))
	var newAddr string
	l.srv.beforeRetire = func() {
		// Committed: the new address serves while the old one still does.
		newAddr = lst.addr().String()
		ld.moveTo(newAddr)
	}
	if r, err := l.srv.reload(path, "test"); r != reloadApplied || err != nil {
		t.Fatalf("reload: %s %v\n%s", r, err, l.logs)
	}
	l.srv.beforeRetire = nil
	if newAddr == oldAddr || !strings.HasPrefix(newAddr, "127.0.0.1:") {
		t.Fatalf("listener at %s after the reload, was %s", newAddr, oldAddr)
	}
	if c, err := net.Dial("tcp", oldAddr); err == nil {
		_ = c.Close()
		t.Fatalf("the old address %s still accepts connections", oldAddr)
	}
	ld.await(50)
	ld.requireNoFailures("listen." + name + " moved")
	if ld.sentTo(oldAddr) == 0 || ld.sentTo(newAddr) == 0 {
		t.Fatalf("load did not span the move: %d to the old, %d to the new address", ld.sentTo(oldAddr), ld.sentTo(newAddr))
	}
	if inFlight != nil {
		idp.SetHang(nil)
		close(hang)
		if err := <-inFlight; err != nil {
			t.Fatalf("request in flight on the old listener: %v", err)
		}
	}
	if got := *lst.field(l.srv.config()); got != "localhost:0" {
		t.Fatalf("listen.%s in force: %q", name, got)
	}
	for _, c := range []string{"svc-a", "cust-acme"} {
		if n := idp.MintsFor(c); n > 1 {
			t.Fatalf("%s minted %d times across the move, want at most 1", c, n)
		}
	}
	noBrokerSecrets(t, l.logs.String())
}

// TestReloadListenTLSUnderLoad changes listen.tls under a load of Checks
// over TLS: new certificate paths, then a client CA. Each change gets a new
// server on the same socket: the address never refuses a connection, no
// Check fails, new handshakes see the new settings, and a caller the new
// client CA does not admit loses its connection instead of keeping it.
func TestReloadListenTLSUnderLoad(t *testing.T) {
	dir := t.TempDir()
	serverCA, clientCA := testcerts.NewCA(t, "server-ca"), testcerts.NewCA(t, "client-ca")
	certA, keyA := serverCA.IssueFiles(t, dir, "a", "tokenbroker-a", false)
	certB, keyB := serverCA.IssueFiles(t, dir, "b", "tokenbroker-b", false)
	caFile := filepath.Join(dir, "client-ca.crt")
	testcerts.Write(t, caFile, clientCA.PEM(), time.Now())
	clientPEM, clientKey := clientCA.Issue(t, "envoy", true)
	clientCert, err := tls.X509KeyPair(clientPEM, clientKey)
	if err != nil {
		t.Fatal(err)
	}

	idp, url, _ := reloadIdP(t)
	body := func(cert, key, clientCAFile string) string {
		b := "listen:\n  grpc: 127.0.0.1:0\n  admin: 127.0.0.1:0\n  http: 127.0.0.1:0\n  tls:\n    cert_file: " + cert + "\n    key_file: " + key + "\n"
		if clientCAFile != "" {
			b += "    client_ca_file: " + clientCAFile + "\n"
		}
		return b + "credentials:\n" + cred("a", url) + "routes:\n  - host: a.example.com\n    credential: a\n"
	}
	path := write(t, "tb.yaml", body(certA, keyA, ""))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	srv, err := start(cfg, zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(logs), zapcore.DebugLevel)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.stop)
	addr, fwdAddr := srv.grpc.addr().String(), srv.forwardAuth.addr().String()

	clientTLS := func(cert *tls.Certificate) *tls.Config {
		c := &tls.Config{RootCAs: serverCA.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
		if cert != nil {
			c.Certificates = []tls.Certificate{*cert}
		}
		return c
	}
	// servedCN is the certificate a new handshake with addr sees.
	servedCN := func(addr string, protos ...string) string {
		t.Helper()
		c := clientTLS(&clientCert)
		c.NextProtos = protos
		conn, err := tls.Dial("tcp", addr, c)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	g := &grpcChecks{t: t, opts: []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(clientTLS(&clientCert)))}}
	if err := g.check(addr, "a.example.com"); err != nil {
		t.Fatal(err)
	}
	// A caller without a client certificate, admitted while there is no client CA.
	bare, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(clientTLS(nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	bareChecks := &grpcChecks{t: t, conn: map[string]authv3.AuthorizationClient{addr: authv3.NewAuthorizationClient(bare)}}
	if err := bareChecks.check(addr, "a.example.com"); err != nil {
		t.Fatal(err)
	}

	for _, step := range []struct {
		name, body, wantCN string
	}{
		{"new certificate paths", body(certB, keyB, ""), "tokenbroker-b"},
		{"client CA added", body(certB, keyB, caFile), "tokenbroker-b"},
	} {
		ld := startLoad(t, 4, 3000, addr, func(a string) error { return g.check(a, "a.example.com") })
		ld.await(50)
		replaceFile(t, path, step.body)
		if r, err := srv.reload(path, "test"); r != reloadApplied || err != nil {
			t.Fatalf("%s: reload %s %v\n%s", step.name, r, err, logs)
		}
		ld.await(100) // Checks after the change, over reconnected clients
		ld.requireNoFailures("listen.tls: " + step.name)
		if got := srv.grpc.addr().String(); got != addr {
			t.Fatalf("%s: the gRPC listener moved to %s", step.name, got)
		}
		if got := servedCN(addr); got != step.wantCN {
			t.Fatalf("%s: gRPC serves %s, want %s", step.name, got, step.wantCN)
		}
		if got := servedCN(fwdAddr, "http/1.1"); got != step.wantCN {
			t.Fatalf("%s: forward-auth serves %s, want %s", step.name, got, step.wantCN)
		}
	}
	// The old server sent the certificate-less caller a GOAWAY; its next
	// connection must present a certificate of the client CA, so it fails.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for bare.GetState() == connectivity.Ready {
		if !bare.WaitForStateChange(ctx, connectivity.Ready) {
			t.Fatal("the certificate-less caller's connection was kept open")
		}
	}
	if err := bareChecks.check(addr, "a.example.com"); err == nil {
		t.Fatal("a caller without a client certificate is still served after client_ca_file was set")
	}
	if n := idp.MintsFor("svc-a"); n != 1 {
		t.Fatalf("svc-a minted %d times across the TLS changes, want 1", n)
	}
}
