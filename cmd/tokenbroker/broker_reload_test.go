package main

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

// TestReloadBrokerUnderLoad changes the broker section one setting at a
// time — a client limit, the pass-through parameters, a new upstream, a
// budget, the admin token — while a client keeps asking the broker for its
// token: no request fails and the cached token, whose key is unchanged, is
// never minted again. Each change applies to the next request, and an
// upstream that is removed takes its cached tokens with it.
func TestReloadBrokerUnderLoad(t *testing.T) {
	idp, idpURL, _ := reloadIdP(t)
	adminToken := write(t, "admin.token", "admin-token-one\n")
	auth0 := func(extra string) string {
		return "    - name: auth0\n      token_url: " + idpURL + "/oauth/token\n      client_ids: [\"cust-*\"]\n" + extra
	}
	partner := "    - name: partner\n      token_url: " + idpURL + "/oauth/token\n      client_ids: [\"partner-*\"]\n"
	body := func(upstreams, credExtra string) string {
		return "listen:\n  grpc: 127.0.0.1:0\n  admin: 127.0.0.1:0\n  broker: 127.0.0.1:0\nadmin:\n  token_file: " + adminToken + "\n" +
			"credentials:\n" + cred("a", idpURL) + credExtra + "routes:\n  - host: a.example.com\n    credential: a\n" +
			"broker:\n  upstreams:\n" + upstreams
	}
	path := write(t, "tb.yaml", body(auth0(""), ""))
	l := startLive(t, path, idp, idpURL)
	brokerAddr, adminAddr := l.srv.brokerHTTP.addr().String(), l.srv.admin.addr().String()
	hc := &http.Client{Transport: &http.Transport{}, Timeout: 20 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	audience := url.Values{"audience": {"https://api.example.com"}}
	ask := func(client string, params url.Values) int {
		t.Helper()
		code, err := brokerToken(hc, brokerAddr, client, brokerClients[client], params)
		if err != nil {
			t.Fatal(err)
		}
		return code
	}
	if code := ask("cust-acme", audience); code != 200 {
		t.Fatalf("cust-acme: %d", code)
	}
	if code := ask("partner-initech", nil); code != 401 {
		t.Fatalf("partner-initech before its upstream exists: %d, want 401", code)
	}
	if got := outcome(l.check(t, "a.example.com/")); got != "ok" {
		t.Fatal(got)
	}

	ld := startLoad(t, 4, 3000, brokerAddr, func(a string) error {
		if code, err := brokerToken(hc, a, "cust-acme", brokerClients["cust-acme"], audience); err != nil || code != 200 {
			return fmt.Errorf("%d %v", code, err)
		}
		return nil
	})
	for _, step := range []struct{ name, body, adminToken string }{
		{"limit", body(auth0("      limit: {mints: 1, per: 1h}\n"), ""), ""},
		{"pass_params", body(auth0("      limit: {mints: 1, per: 1h}\n      pass_params: [audience, scope, resource, organization]\n"), ""), ""},
		{"new upstream", body(auth0("      limit: {mints: 1, per: 1h}\n")+partner, ""), ""},
		{"budget", body(auth0("      limit: {mints: 1, per: 1h}\n      budget: {mints: 100, per: 720h, enforce: true}\n")+partner, ""), ""},
		{"admin token", body(auth0("      limit: {mints: 1, per: 1h}\n")+partner, ""), "admin-token-two\n"},
	} {
		ld.await(30)
		if step.adminToken != "" {
			if err := os.WriteFile(adminToken, []byte(step.adminToken), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		replaceFile(t, path, step.body)
		if r, err := l.srv.reload(path, "test"); r != reloadApplied || err != nil {
			t.Fatalf("%s: reload %s %v\n%s", step.name, r, err, l.logs)
		}
	}
	ld.await(30)
	ld.requireNoFailures("broker section changed 5 times")
	if n := idp.MintsFor("cust-acme"); n != 1 {
		t.Fatalf("cust-acme minted %d times across the broker changes, want 1", n)
	}

	// The next request sees every change.
	if code := ask("partner-initech", nil); code != 200 {
		t.Errorf("partner-initech after its upstream was added: %d", code)
	}
	if code := ask("cust-globex", audience); code != 200 { // its one mint this hour
		t.Errorf("cust-globex: %d", code)
	}
	if code := ask("cust-globex", url.Values{"audience": {"https://other.example.com"}}); code != 429 {
		t.Errorf("cust-globex's second mint under limit 1/h: %d, want 429", code)
	}
	invalidate := func(token string) int {
		var out, errb bytes.Buffer
		tf := write(t, "token", token)
		return run([]string{"invalidate", "a", "--admin", adminAddr, "--token-file", tf}, &out, &errb)
	}
	if code := invalidate("admin-token-one"); code != 1 {
		t.Errorf("invalidate with the replaced admin token: exit %d, want 1", code)
	}
	if code := invalidate("admin-token-two"); code != 0 {
		t.Errorf("invalidate with the new admin token: exit %d, want 0", code)
	}

	// A credential budget set by a reload refuses the next mint: a has
	// minted once and was just invalidated.
	replaceFile(t, path, body(auth0("")+partner, "    budget: {mints: 1, per: 1h, enforce: true}\n"))
	if r, err := l.srv.reload(path, "test"); r != reloadApplied || err != nil {
		t.Fatalf("budget reload: %s %v", r, err)
	}
	if got := outcome(l.check(t, "a.example.com/")); got != "mint budget used up" {
		t.Errorf("Check after the budget was used up: %q", got)
	}

	// auth0 removed: its clients' tokens go, and its clients are refused.
	replaceFile(t, path, body(partner, ""))
	if r, err := l.srv.reload(path, "test"); r != reloadApplied || err != nil {
		t.Fatalf("reload: %s %v", r, err)
	}
	for _, st := range l.srv.tokens.Snapshot() {
		if st.Key.Name == broker.NamePrefix+"auth0" {
			t.Fatalf("a token of the removed upstream is still cached")
		}
	}
	if code := ask("cust-acme", audience); code != 401 {
		t.Errorf("cust-acme after its upstream was removed: %d, want 401", code)
	}
	logs := l.logs.String()
	noBrokerSecrets(t, logs)
	if strings.Contains(logs, "admin-token-") {
		t.Fatal("the admin token reached the logs")
	}
}
