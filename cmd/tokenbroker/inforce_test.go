package main

import (
	"runtime"
	"testing"
	"weak"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/config"
)

// TestParsedCredentialsNotKept: once a configuration is in force nothing
// holds its parsed credentials and routes (the assembly keeps digests, the
// sources, filter, budgets and status page what they read), so 100,000 of
// them do not cost their ~0.9 KB each for the life of the process.
func TestParsedCredentialsNotKept(t *testing.T) {
	idp, url := newIdP(t)
	path := write(t, "tb.yaml", tbConfig(url, []string{"a", "b"}, "a.example.com=a", "b.example.com=b"))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var parsed []weak.Pointer[config.Credential]
	for _, c := range cfg.Credentials {
		parsed = append(parsed, weak.Make(c))
	}
	routes := weak.Make(&cfg.Routes[0]) // the slice's array
	srv, err := start(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.stop)
	cfg = nil
	runtime.GC() // a full cycle: whatever is unreachable now is collected
	for _, p := range parsed {
		if c := p.Value(); c != nil {
			t.Errorf("credential %q is still reachable after the load", c.Name)
		}
	}
	if routes.Value() != nil {
		t.Error("the parsed routes are still reachable after the load")
	}
	// And they are still served.
	l := &live{idp: idp, srv: srv, client: authv3.NewAuthorizationClient(dial(t, srv.grpc.addr().String()))}
	for _, hp := range []string{"a.example.com/", "b.example.com/"} {
		if got := outcome(l.check(t, hp)); got != "ok" {
			t.Errorf("%s: %s", hp, got)
		}
	}
}
