package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBrokerOnly(t *testing.T) {
	cfg, err := Parse("tb.yaml", []byte(`listen:
  broker: 127.0.0.1:9194
broker:
  upstreams:
    - token_url: https://tenant.auth0.com/oauth/token
      client_ids: ["cust-*"]
      limit: {mints: 10, per: 1h}
      budget: {mints: 1000, enforce: true}
      cost_per_mint: 0.001
`))
	if err != nil {
		t.Fatalf("a config with only the broker: %v", err)
	}
	u := cfg.Broker.Upstreams[0]
	if cfg.Broker.Path != "/oauth/token" || u.Name != "upstream-0" || strings.Join(u.PassParams, ",") != "audience,scope,resource" {
		t.Errorf("defaults: path %q name %q pass_params %v", cfg.Broker.Path, u.Name, u.PassParams)
	}
	if u.Budget.Per.D() != DefaultBudgetWindow || !u.Budget.Enforce || u.Limit.Per.D() != time.Hour || u.CostPerMint != 0.001 {
		t.Errorf("upstream %+v", u)
	}
	if len(cfg.Credentials) != 0 || len(cfg.Routes) != 0 {
		t.Error("credentials or routes appeared from nowhere")
	}
}

func TestBrokerErrors(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"no upstream", "listen: {broker: 127.0.0.1:9194}\n", "tb.yaml:1: listen.broker: the broker needs at least one entry"},
		{"bad listen", "listen: {broker: nowhere}\n", "tb.yaml:1: listen.broker: not a host:port address"},
		{"bad path", "broker: {path: token}\n", "tb.yaml:1: broker.path: must start with"},
		{"bad url", "broker:\n  upstreams:\n    - token_url: ftp://x\n", "tb.yaml:3: broker.upstreams[0].token_url: not an absolute http(s) URL"},
		{"bad glob", "broker:\n  upstreams:\n    - token_url: https://i/t\n      client_ids: ['[']\n", "tb.yaml:4: broker.upstreams[0].client_ids[0]: not a valid glob"},
		{"reserved param", "broker:\n  upstreams:\n    - token_url: https://i/t\n      pass_params: [client_secret]\n", "broker.upstreams[0].pass_params[0]: must be a parameter name"},
		{"limit without per", "broker:\n  upstreams:\n    - token_url: https://i/t\n      limit: {mints: 3}\n", "broker.upstreams[0].limit.per: must be between 1s and 24h"},
		{"negative budget", "credentials:\n  a: {token_url: https://i/t, client_id: a, client_secret: b, budget: {mints: -1}}\n", "credentials.a.budget.mints: must be between 0 and 1000000000"},
		{"negative cost", "credentials:\n  a: {token_url: https://i/t, client_id: a, client_secret: b, cost_per_mint: -0.1}\n", "credentials.a.cost_per_mint: must be between 0 and 1000"},
		{"binding key missing", "broker: {binding_key_file: /nonexistent/tokenbroker-key}\n", "tb.yaml:1: broker.binding_key_file: cannot read the file"},
		{"admin token missing", "admin: {token_file: /nonexistent/tokenbroker-admin}\n", "tb.yaml:1: admin.token_file: cannot read the file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("tb.yaml", []byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want %q", err, tt.want)
			}
		})
	}
}

func TestAdminTokenFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(p, []byte("admin-s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse("", []byte("admin: {token_file: "+p+"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Admin.Token.Reveal() != "admin-s3cret" {
		t.Error("admin token not read")
	}
}
