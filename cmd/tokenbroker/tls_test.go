package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/testcerts"
)

// TestServeGRPCWithClientCertificates: with listen.tls.client_ca_file, only
// callers presenting a certificate of that CA reach Check.
func TestServeGRPCWithClientCertificates(t *testing.T) {
	dir := t.TempDir()
	serverCA, clientCA, otherCA := testcerts.NewCA(t, "server-ca"), testcerts.NewCA(t, "client-ca"), testcerts.NewCA(t, "other-ca")
	certFile, keyFile := serverCA.IssueFiles(t, dir, "server", "tokenbroker", false)
	caFile := filepath.Join(dir, "client-ca.crt")
	testcerts.Write(t, caFile, clientCA.PEM(), time.Now())
	cfg, err := config.Parse("t.yaml", []byte(`listen:
  grpc: 127.0.0.1:0
  admin: ""
  tls:
    cert_file: `+certFile+`
    key_file: `+keyFile+`
    client_ca_file: `+caFile+`
`))
	if err != nil {
		t.Fatal(err)
	}
	s, err := start(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()

	health := func(cert *tls.Certificate) error {
		tc := &tls.Config{RootCAs: serverCA.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		conn, err := grpc.NewClient(s.grpc.addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	pair := func(ca *testcerts.CA) *tls.Certificate {
		c, k := ca.Issue(t, "envoy", true)
		p, err := tls.X509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		return &p
	}
	if err := health(pair(clientCA)); err != nil {
		t.Fatalf("valid client certificate refused: %v", err)
	}
	if err := health(nil); err == nil {
		t.Fatal("a caller without a client certificate was served")
	}
	if err := health(pair(otherCA)); err == nil {
		t.Fatal("a caller with a certificate of another CA was served")
	}
}

func TestValidateBuildsSources(t *testing.T) {
	key := write(t, "key.pem", "not a key")
	cfg := write(t, "tb.yaml", "credentials:\n  a:\n    token_url: https://idp.example.com/token\n    client_id: x\n    auth_method: private_key_jwt\n    private_key_file: "+key+"\n")
	var out, errb bytes.Buffer
	if code := run([]string{"validate", "--config", cfg}, &out, &errb); code != 1 {
		t.Fatalf("exit %d for an unparsable key", code)
	}
	if !strings.Contains(errb.String(), "credentials.a:") || !strings.Contains(errb.String(), "no PEM private key") {
		t.Fatalf("stderr: %s", errb.String())
	}
	if !strings.Contains(errb.String(), "warning: credentials.a has no allowed_sources") {
		t.Fatalf("no warning about allowed_sources: %s", errb.String())
	}
}
