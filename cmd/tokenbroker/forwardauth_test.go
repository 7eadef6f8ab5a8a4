package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/tokenbroker/tokenbroker/internal/devidp"
)

// TestServeForwardAuth runs the binary with listen.http: the HTTP and gRPC
// paths share one cache and count in the same metrics, `health` reports
// SERVING, and SIGTERM still exits 0 with the extra listener.
func TestServeForwardAuth(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	idp := devidp.New(devidp.Options{Clients: map[string]string{"svc": "secret-value"}})
	idpSrv := httptest.NewServer(idp)
	defer idpSrv.Close()
	cfg := write(t, "tb.yaml", `
listen:
  grpc: 127.0.0.1:0
  admin: 127.0.0.1:0
  http: 127.0.0.1:0
credentials:
  svc:
    token_url: `+idpSrv.URL+`/oauth/token
    client_id: svc
    client_secret: ${SVC_SECRET}
routes:
  - host: api.example.com
    credential: svc
`)
	p := startBinary(t, cfg, "SVC_SECRET=secret-value")
	if p.httpAddr == "" || p.httpAddr == "off" {
		t.Fatalf("forward-auth listener not reported: %q", p.httpAddr)
	}

	fwd := func(host, uri string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+p.httpAddr+"/auth", nil)
		req.Host = host
		req.Header.Set("X-Original-URI", uri)
		req.Header.Set("X-Original-Method", "GET")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	resp := fwd("api.example.com", "/x")
	httpTok := resp.Header.Get("Authorization")
	if resp.StatusCode != 200 || !strings.HasPrefix(httpTok, "Bearer devidp.") {
		t.Fatalf("forward-auth: %d %v", resp.StatusCode, resp.Header)
	}
	if resp := fwd("other.example.com", "/x"); resp.StatusCode != 403 || resp.Header.Get("X-Tokenbroker-Reason") != "no route" {
		t.Fatalf("denial: %d %v", resp.StatusCode, resp.Header)
	}

	conn := dial(t, p.grpcAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cr, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Host: "api.example.com", Path: "/", Method: "GET"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got := cr.GetOkResponse().GetHeaders()[0].GetHeader().GetValue(); got != httpTok {
		t.Fatal("gRPC and HTTP handed out different tokens")
	}
	if idp.Mints() != 1 {
		t.Fatalf("mints = %d, want 1", idp.Mints())
	}

	mresp, err := http.Get("http://" + p.adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, want := range []string{`tokenbroker_checks_total{result="ok"} 2`, `tokenbroker_checks_total{result="no_route"} 1`} {
		if !bytes.Contains(metrics, []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}

	var out, errb bytes.Buffer
	if code := run([]string{"health", "--grpc", p.grpcAddr}, &out, &errb); code != 0 || !strings.Contains(out.String(), "SERVING") {
		t.Fatalf("health --grpc: %d %q %q", code, out.String(), errb.String())
	}
	out.Reset()
	if code := run([]string{"health", "--http", "http://" + p.adminAddr + "/readyz"}, &out, &errb); code != 0 {
		t.Fatalf("health --http: %d %q %q", code, out.String(), errb.String())
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, p.logText())
		}
	case <-ctx.Done():
		t.Fatal("did not exit")
	}
	if code := run([]string{"health", "--grpc", p.grpcAddr, "--timeout", "2s"}, &out, &errb); code != 1 {
		t.Fatalf("health of a stopped server: exit %d", code)
	}
	if strings.Contains(p.logText(), "secret-value") || strings.Contains(p.logText(), strings.TrimPrefix(httpTok, "Bearer ")) {
		t.Fatal("secret or token in logs")
	}
}
