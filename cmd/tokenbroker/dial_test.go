package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/testcerts"
)

// tlsServer is an in-process tokenbroker whose gRPC listener serves
// listen.tls, and a configuration file naming its real addresses, as the
// file beside a running server would.
type tlsServer struct {
	s                  *assembly
	cfgFile            string
	ca                 *testcerts.CA
	dir, caFile        string
	certFile, keyFile  string
	clientCA           *testcerts.CA
	clientCrt, clientK string
}

func startTLSServer(t *testing.T, clientCerts bool) *tlsServer {
	t.Helper()
	ts := &tlsServer{dir: t.TempDir(), ca: testcerts.NewCA(t, "server-ca")}
	ts.certFile, ts.keyFile = ts.ca.IssueFiles(t, ts.dir, "server", "tokenbroker.tokenbroker.svc", false)
	ts.caFile = filepath.Join(ts.dir, "ca.crt")
	testcerts.Write(t, ts.caFile, ts.ca.PEM(), time.Now())
	tlsBlock := "  tls:\n    cert_file: " + ts.certFile + "\n    key_file: " + ts.keyFile + "\n"
	if clientCerts {
		ts.clientCA = testcerts.NewCA(t, "client-ca")
		clientCAFile := filepath.Join(ts.dir, "client-ca.crt")
		testcerts.Write(t, clientCAFile, ts.clientCA.PEM(), time.Now())
		ts.clientCrt, ts.clientK = ts.clientCA.IssueFiles(t, ts.dir, "envoy", "envoy", true)
		tlsBlock += "    client_ca_file: " + clientCAFile + "\n"
	}
	cfg, err := config.Parse("t.yaml", []byte("listen:\n  grpc: 127.0.0.1:0\n  admin: 127.0.0.1:0\n"+tlsBlock))
	if err != nil {
		t.Fatal(err)
	}
	ts.s, err = start(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ts.s.stop)
	// 0.0.0.0 as a container's configuration says: the probe dials loopback.
	grpcPort := ts.s.grpc.addr().String()[strings.LastIndex(ts.s.grpc.addr().String(), ":"):]
	ts.cfgFile = write(t, "tokenbroker.yaml", "listen:\n  grpc: 0.0.0.0"+grpcPort+"\n  admin: "+ts.s.admin.addr().String()+"\n"+tlsBlock)
	return ts
}

func runCmd(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestHealthAndCheckOverTLS: with listen.tls on, `health` and `check` reach
// the gRPC listener by --config (trusting exactly listen.tls.cert_file) or by
// --tls-ca; plaintext fails as it did before they spoke TLS.
func TestHealthAndCheckOverTLS(t *testing.T) {
	ts := startTLSServer(t, false)
	addr := ts.s.grpc.addr().String()
	other := testcerts.NewCA(t, "other-ca")
	otherCA := filepath.Join(ts.dir, "other-ca.crt")
	testcerts.Write(t, otherCA, other.PEM(), time.Now())
	// A configuration naming a certificate the server does not present.
	strangerCrt, strangerKey := ts.ca.IssueFiles(t, ts.dir, "stranger", "stranger", false)
	stranger := write(t, "stranger.yaml", "listen:\n  grpc: "+addr+"\n  admin: \"\"\n  tls:\n    cert_file: "+strangerCrt+"\n    key_file: "+strangerKey+"\n")

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"plaintext fails", []string{"health", "--grpc", addr, "--timeout", "2s"}, 1, ""},
		{"--config", []string{"health", "--config", ts.cfgFile}, 0, "SERVING"},
		// Pinned to the exact certificate, names do not matter (a Service name, rarely 127.0.0.1).
		{"--config ignores names", []string{"health", "--config", ts.cfgFile, "--tls-server-name", "not-in-the.certificate"}, 0, "SERVING"},
		{"--tls-ca", []string{"health", "--grpc", addr, "--tls-ca", ts.caFile}, 0, "SERVING"},
		{"--tls-ca with the certificate's name", []string{"health", "--grpc", addr, "--tls-ca", ts.caFile, "--tls-server-name", "localhost"}, 0, "SERVING"},
		{"--tls-ca with another name", []string{"health", "--grpc", addr, "--tls-ca", ts.caFile, "--tls-server-name", "tokenbroker.other.svc", "--timeout", "2s"}, 1, ""},
		{"--tls-ca of another CA", []string{"health", "--grpc", addr, "--tls-ca", otherCA, "--timeout", "2s"}, 1, ""},
		{"--config pins the certificate", []string{"health", "--config", stranger, "--timeout", "2s"}, 1, ""},
		{"--tls-cert without --tls-key", []string{"health", "--config", ts.cfgFile, "--tls-cert", ts.certFile}, 1, ""},
		{"check --config", []string{"check", "--config", ts.cfgFile, "--host", "api.example.com"}, 3, "DENIED 403"},
		{"check plaintext fails", []string{"check", "--grpc", addr, "--host", "api.example.com", "--timeout", "2s"}, 1, ""},
		{"admin /readyz is plain HTTP", []string{"health", "--http", "http://" + ts.s.admin.addr().String() + "/readyz"}, 0, "SERVING"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCmd(tc.args...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s", code, tc.code, out, errs)
			}
		})
	}
}

// TestHealthWithClientCertificates: a listener that requires client
// certificates is probed with --tls-cert/--tls-key, or through the admin
// listener; without either, health says what to do.
func TestHealthWithClientCertificates(t *testing.T) {
	ts := startTLSServer(t, true)
	code, _, errs := runCmd("health", "--config", ts.cfgFile)
	if code != 1 || !strings.Contains(errs, "client_ca_file") || !strings.Contains(errs, "--tls-cert") {
		t.Fatalf("without a client certificate: exit %d, %s", code, errs)
	}
	if code, out, errs := runCmd("health", "--config", ts.cfgFile, "--tls-cert", ts.clientCrt, "--tls-key", ts.clientK); code != 0 {
		t.Fatalf("with a client certificate: exit %d %s %s", code, out, errs)
	}
	if code, out, errs := runCmd("check", "--config", ts.cfgFile, "--tls-cert", ts.clientCrt, "--tls-key", ts.clientK, "--host", "api.example.com"); code != 3 {
		t.Fatalf("check with a client certificate: exit %d %s %s", code, out, errs)
	}
	// A server certificate is no client certificate of the client CA.
	if code, _, _ := runCmd("health", "--config", ts.cfgFile, "--tls-cert", ts.certFile, "--tls-key", ts.keyFile, "--timeout", "2s"); code != 1 {
		t.Fatalf("a certificate of another CA was accepted: exit %d", code)
	}
}

// TestDockerfileHealthcheckWithTLS runs the Dockerfile's HEALTHCHECK command
// against a server with listen.tls and client certificates on: the image's
// healthcheck must not depend on the token listeners' TLS.
func TestDockerfileHealthcheckWithTLS(t *testing.T) {
	df, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*CMD (\[.*"health".*\])`).FindSubmatch(df)
	if m == nil {
		t.Fatal("no HEALTHCHECK … CMD [\"/tokenbroker\", \"health\", …] in the Dockerfile")
	}
	var argv []string
	if err := json.Unmarshal(m[1], &argv); err != nil || len(argv) < 2 || argv[0] != "/tokenbroker" {
		t.Fatalf("HEALTHCHECK CMD %s: %v", m[1], err)
	}
	ts := startTLSServer(t, true)
	args := argv[1:]
	for i, a := range args {
		args[i] = strings.ReplaceAll(a, "127.0.0.1:9193", ts.s.admin.addr().String())
	}
	if code, out, errs := runCmd(args...); code != 0 {
		t.Fatalf("%v: exit %d %s %s", args, code, out, errs)
	}
	ts.s.admin.handler.SetReady(false) // as during shutdown
	if code, _, _ := runCmd(args...); code != 1 {
		t.Fatalf("%v: exit %d for a server that is not ready", args, code)
	}
}
