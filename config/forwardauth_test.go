package config

import (
	"strings"
	"testing"
)

func TestForwardAuthSettings(t *testing.T) {
	cfg, err := Parse("", []byte(cred))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen.HTTP != "" || cfg.ForwardAuth.EnvoyPathPrefix != "/envoy" {
		t.Fatalf("defaults: listen.http %q, envoy_path_prefix %q", cfg.Listen.HTTP, cfg.ForwardAuth.EnvoyPathPrefix)
	}
	cfg, err = Parse("", []byte(cred+"listen: {http: 127.0.0.1:9192}\nforward_auth: {envoy_path_prefix: \"\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen.HTTP != "127.0.0.1:9192" || cfg.ForwardAuth.EnvoyPathPrefix != "" {
		t.Fatalf("explicit: %+v %+v", cfg.Listen, cfg.ForwardAuth)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"listen: {http: nonsense}\n", "listen.http: not a host:port address"},
		{"forward_auth: {envoy_path_prefix: envoy}\n", "forward_auth.envoy_path_prefix: must be"},
		{"forward_auth: {envoy_path_prefix: /envoy/}\n", "forward_auth.envoy_path_prefix: must be"},
		{"forward_auth: {envoy_path_prefix: \"/a?b\"}\n", "forward_auth.envoy_path_prefix: must be"},
	} {
		_, err := Parse("x.yaml", []byte(cred+tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
