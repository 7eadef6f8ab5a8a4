package main

import (
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/config"
)

// TestCheckExplainsDenials: with --config, a denial says which routes the
// host has and why none matched, the quickstart's first-day surprise.
func TestCheckExplainsDenials(t *testing.T) {
	t.Setenv("DEMO_CLIENT_SECRET", "demo-secret")
	body := `listen:
  grpc: 127.0.0.1:0
  admin: ""
credentials:
  orders:
    token_url: http://127.0.0.1:1/oauth/token
    client_id: demo
    client_secret: ${DEMO_CLIENT_SECRET}
routes:
  - host: orders.example.com
    path_prefix: /v1
    credential: orders
  - host: orders.example.com
    methods: [POST]
    path_prefix: /v2
    credential: orders
  - host: "*.orders.example.com"
    credential: orders
`
	cfg, err := config.Parse("t.yaml", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	s, err := start(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	file := write(t, "tokenbroker.yaml", strings.Replace(body, "127.0.0.1:0", s.grpc.addr().String(), 1))

	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--host", "orders.example.com", "--path", "/"}, []string{
			file + ":10: host orders.example.com path_prefix /v1 → orders: path / is outside path_prefix /v1",
			file + ":13: host orders.example.com path_prefix /v2 methods POST → orders: method GET is not one of POST; path / is outside path_prefix /v2",
			"*.orders.example.com matches subdomains of orders.example.com, never orders.example.com itself",
			"default_action is deny",
		}},
		{[]string{"--host", "billing.example.com"}, []string{"no route names host billing.example.com; routes exist for: orders.example.com, *.orders.example.com"}},
		{[]string{"--host", "orders.example.com", "--credential", "nope"}, []string{`--credential "nope" names no credential; the configuration has: orders`}},
	} {
		code, out, errs := runCmd(append([]string{"check", "--config", file}, tc.args...)...)
		if code != 3 {
			t.Fatalf("%v: exit %d %s %s", tc.args, code, out, errs)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: output lacks %q:\n%s", tc.args, w, out)
			}
		}
	}
	// Without --config, a pointer to it.
	code, out, _ := runCmd("check", "--grpc", s.grpc.addr().String(), "--host", "orders.example.com")
	if code != 3 || !strings.Contains(out, "add --config FILE") {
		t.Errorf("without --config: exit %d\n%s", code, out)
	}
	if strings.Contains(out, "demo-secret") {
		t.Fatal("secret printed")
	}
}
