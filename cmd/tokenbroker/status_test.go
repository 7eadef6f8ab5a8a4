package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/tokenbroker/tokenbroker/internal/devidp"
)

// TestStatusPageInBrowser runs the binary with credentials and the broker,
// sends Checks (allowed and denied for every reason, over gRPC and HTTP) and
// broker requests, invalidates a credential with the CLI, and loads /status
// in headless Chromium: the credential rows with their routes and last
// failure, the countdown, the budget bar, the chart's axes and mint marks,
// Checks by credential and reason, and the recent denials must be there; the
// counts are the Checks sent; no token or secret on the page, in
// /status.json or in the logs, and no external link. The screenshot goes to
// artifacts/ (docs/status.png is a copy).
func TestStatusPageInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs Chromium")
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("chromium is not installed (.ci/install-deps installs it)")
		}
		t.Skip("chromium is not installed")
	}
	idp := devidp.New(devidp.Options{Clients: map[string]string{
		"svc-billing": "billing-secret-value", "svc-search": "search-secret-value",
		"cust-acme": "acme-secret-value", "cust-globex": "globex-secret-value",
		"svc-payments": "payments-secret-value", "svc-reports": "the-real-reports-secret",
	}})
	idpSrv := httptest.NewServer(idp)
	defer idpSrv.Close()
	adminToken := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(adminToken, []byte("admin-token-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := write(t, "tb.yaml", `
listen:
  grpc: 127.0.0.1:0
  admin: 127.0.0.1:0
  broker: 127.0.0.1:0
  http: 127.0.0.1:0
admin:
  token_file: `+adminToken+`
credentials:
  billing:
    token_url: `+idpSrv.URL+`/oauth/token
    client_id: svc-billing
    client_secret: billing-secret-value
    cost_per_mint: 0.001
    budget: {mints: 10, per: 24h}
  search:
    token_url: `+idpSrv.URL+`/oauth/token
    client_id: svc-search
    client_secret: search-secret-value
    cost_per_mint: 0.001
    budget: {mints: 2, per: 1h, enforce: true}
  payments:
    token_url: `+idpSrv.URL+`/oauth/token
    client_id: svc-payments
    client_secret: payments-secret-value
    allowed_sources: ["spiffe://cluster.local/ns/payments/sa/api"]
  reports:
    token_url: `+idpSrv.URL+`/oauth/token
    client_id: svc-reports
    client_secret: reports-wrong-secret-value
routes:
  - host: billing.example.com
    credential: billing
  - host: search.example.com
    credential: search
  - host: payments.example.com
    path_prefix: /v1
    credential: payments
  - host: reports.example.com
    credential: reports
broker:
  upstreams:
    - name: auth0
      token_url: `+idpSrv.URL+`/oauth/token
      client_ids: ["cust-*"]
      cost_per_mint: 0.001
      limit: {mints: 10, per: 1h}
      budget: {mints: 100, per: 720h}
`)
	p := startBinary(t, cfg, "TOKENBROKER_STATUS_SAMPLE_EVERY=300ms")
	brokerAddr := servingField(t, p, "broker")
	conn := dial(t, p.grpcAddr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	authz := authv3.NewAuthorizationClient(conn)
	sent := 0 // every Check and forward-auth request: the page must count each
	checkAs := func(host, path, principal, credential string) *authv3.CheckResponse {
		attrs := &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Host: host, Path: path, Method: "GET",
				Headers: map[string]string{"authorization": "Bearer caller-header-value"}}},
			Source: &authv3.AttributeContext_Peer{Principal: principal},
		}
		if credential != "" {
			attrs.ContextExtensions = map[string]string{"credential": credential}
		}
		r, err := authz.Check(ctx, &authv3.CheckRequest{Attributes: attrs})
		if err != nil {
			t.Fatal(err)
		}
		sent++
		return r
	}
	check := func(host string) { checkAs(host, "/", "", "") }
	brokerReq := func(id, secret string) int {
		res, err := http.PostForm("http://"+brokerAddr+"/oauth/token", url.Values{
			"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}, "audience": {"https://api.example.com"}})
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		_, _ = io.Copy(io.Discard, res.Body)
		return res.StatusCode
	}

	// Invalidation needs the admin token; the CLI sends it.
	var out, errb bytes.Buffer
	if code := run([]string{"invalidate", "billing", "--admin", p.adminAddr}, &out, &errb); code != 1 {
		t.Errorf("invalidate without the admin token: exit %d, want 1", code)
	}
	// Work arrives in rounds while the chart samples every 100ms; stop once
	// the chart has enough points (bounded).
	var status struct {
		Rows []struct {
			Name, Kind, State string
			Mints30d          int64 `json:"mints_30d"`
		} `json:"rows"`
		Samples []json.RawMessage `json:"samples"`
	}
	for round := 0; round < 400 && len(status.Samples) < 12; round++ {
		for range 5 + round%7 {
			check("billing.example.com")
			check("search.example.com")
		}
		for _, c := range [][2]string{{"cust-acme", "acme-secret-value"}, {"cust-globex", "globex-secret-value"}} {
			if s := brokerReq(c[0], c[1]); s != 200 {
				t.Fatalf("broker %s: %d", c[0], s)
			}
		}
		if round == 3 {
			out.Reset()
			if code := run([]string{"invalidate", "billing", "--admin", p.adminAddr, "--token-file", adminToken}, &out, &errb); code != 0 {
				t.Fatalf("invalidate: exit %d: %s", code, errb.String())
			}
			if !strings.Contains(out.String(), `"invalidated":1`) {
				t.Errorf("invalidate said %q", out.String())
			}
		}
		getJSON(t, "http://"+p.adminAddr+"/status.json", &status)
	}
	// search's budget (2 per hour, enforced) is used up by one invalidation;
	// the next Check is denied with a reason.
	for i, want := range []int{0, 1} {
		out.Reset()
		errb.Reset()
		code := run([]string{"invalidate", "search", "--admin", p.adminAddr, "--token-file", adminToken}, &out, &errb)
		if code != 0 {
			t.Fatalf("invalidate search: %d %s", code, errb.String())
		}
		r, err := authz.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Host: "search.example.com", Path: "/", Method: "GET"}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		denied := r.GetDeniedResponse() != nil
		if denied != (want == 1) {
			t.Fatalf("Check %d after invalidating search: denied=%v, want %v", i, denied, want == 1)
		}
		if denied && !strings.Contains(r.String(), "mint budget used up") {
			t.Errorf("denial does not say why: %v", r)
		}
	}
	sent += 2 // the two Checks above
	// One Check for each other denial reason, and a malformed forward-auth request.
	for _, c := range []struct{ host, path, principal, credential, reason string }{
		{"nowhere.example.com", "/admin/users?token=query-secret-value", "", "", "no route"},
		{"billing.example.com", "/", "", "no-such-credential", "unknown credential"},
		{"payments.example.com", "/v1/charges", "spiffe://cluster.local/ns/batch/sa/intruder", "", "source not allowed"},
		{"reports.example.com", "/daily", "", "", "token unavailable"},
	} {
		r := checkAs(c.host, c.path, c.principal, c.credential)
		if r.GetDeniedResponse() == nil || r.GetStatus().GetMessage() != c.reason {
			t.Fatalf("Check to %s: %v, want denied %q", c.host, r, c.reason)
		}
	}
	fwdAddr := servingField(t, p, "http")
	req, _ := http.NewRequest("GET", "http://"+fwdAddr+"/", nil)
	req.Header.Set("X-Forwarded-Uri", "/a")
	req.Header.Set("X-Original-URI", "/b")
	req.Header.Set("X-Forwarded-Host", "billing.example.com")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 403 {
		t.Fatalf("malformed forward-auth request: %d", res.StatusCode)
	}
	sent++
	if brokerReq("cust-acme", "wrong-secret") != 401 {
		t.Error("broker request with a wrong secret was not refused")
	}
	// The screenshot first, while the chart still shows the work above.
	t0 := time.Now()
	flags := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--user-data-dir=" + t.TempDir()}
	statusURL := "http://" + p.adminAddr + "/status"
	shot := filepath.Join(artifacts(t), "status.png")
	if out, err := exec.CommandContext(ctx, chromium, append(flags, "--screenshot="+shot, "--window-size=1280,1760", "--hide-scrollbars", statusURL)...).CombinedOutput(); err != nil {
		t.Fatalf("chromium --screenshot: %v\n%s", err, out)
	}
	if fi, err := os.Stat(shot); err != nil || fi.Size() < 10000 {
		t.Errorf("screenshot %s missing or tiny: %v", shot, err)
	}
	t.Logf("screenshot: %s (%v)", shot, time.Since(t0))
	byName := map[string]string{}
	for _, r := range status.Rows {
		byName[r.Name] = r.State
		if r.Name == "billing" && r.Mints30d != 2 {
			t.Errorf("billing minted %d times, want 2 (one more after invalidate)", r.Mints30d)
		}
	}
	for _, n := range []string{"billing", "search", "cust-acme", "cust-globex"} {
		if byName[n] != "fresh" {
			t.Errorf("status.json row %q state %q, want fresh (rows %v)", n, byName[n], byName)
		}
	}
	// Counts come from decisions: every Check sent, by credential and reason.
	var decided struct {
		Hour   map[string]int64 `json:"checks_hour"`
		Checks []struct {
			Credential string
			Hour       map[string]int64 `json:"hour"`
		} `json:"checks"`
		Denials []map[string]string `json:"recent_denials"`
		Rows    []struct {
			Name        string
			Routes      []string
			LastFailure string `json:"last_failure"`
		} `json:"rows"`
		Samples []struct {
			Failed int64 `json:"failed_mints"`
			Mints  int64
		} `json:"samples"`
	}
	// The page samples every 300ms; read until the last Checks are in (bounded).
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		getJSON(t, "http://"+p.adminAddr+"/status.json", &decided)
		var total int64
		for _, n := range decided.Hour {
			total += n
		}
		if total >= int64(sent) {
			break
		}
	}
	var total int64
	for _, n := range decided.Hour {
		total += n
	}
	if total != int64(sent) {
		t.Errorf("status.json counts %d Checks in the last hour, %d were sent: %v", total, sent, decided.Hour)
	}
	for reason, want := range map[string]int64{"no_route": 1, "unknown_credential": 1, "source_not_allowed": 1, "token_unavailable": 1, "budget": 1, "malformed": 1} {
		if decided.Hour[reason] != want {
			t.Errorf("checks_hour.%s = %d, want %d", reason, decided.Hour[reason], want)
		}
	}
	perCred := map[string]map[string]int64{}
	for _, c := range decided.Checks {
		perCred[c.Credential] = c.Hour
	}
	if perCred["payments"]["source_not_allowed"] != 1 || perCred["search"]["budget"] != 1 || perCred["reports"]["token_unavailable"] != 1 || perCred[""]["no_route"] != 1 {
		t.Errorf("per-credential counts %v", perCred)
	}
	if len(decided.Denials) != 6 || decided.Denials[0]["transport"] != "http" || decided.Denials[1]["transport"] != "grpc" {
		t.Errorf("recent denials %v", decided.Denials)
	}
	for _, d := range decided.Denials {
		if d["reason"] == "no route" && (d["path_segment"] != "/admin" || d["host"] != "nowhere.example.com") {
			t.Errorf("no-route denial %v", d)
		}
		if d["reason"] == "source not allowed" && d["source_principal"] != "spiffe://cluster.local/ns/batch/sa/intruder" {
			t.Errorf("source denial %v", d)
		}
	}
	for _, r := range decided.Rows {
		switch r.Name {
		case "payments":
			if len(r.Routes) != 1 || r.Routes[0] != "payments.example.com/v1" {
				t.Errorf("payments routes %v", r.Routes)
			}
		case "reports":
			if !strings.Contains(r.LastFailure, "invalid_client") {
				t.Errorf("reports last failure %q", r.LastFailure)
			}
		}
	}
	var failed int64
	for _, s := range decided.Samples {
		failed += s.Failed
	}
	if failed < 1 {
		t.Error("no failed mint in the chart's samples")
	}

	dom, err := exec.CommandContext(ctx, chromium, append(flags, "--dump-dom", statusURL)...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	page := string(dom)
	for _, want := range []string{`class="row" data-kind="credential"`, ">billing<", ">search<", ">cust-acme<",
		`class="countdown" data-expires=`, `class="track"><div class="bar`, `<svg class="chart"`, `<circle class="mint"`, `<path class="failed"`,
		">time (UTC)<", ">Checks / 300ms<", `<div>payments.example.com/v1</div>`, "invalid_client",
		`<tr class="checkrow" data-credential="payments">`, `<tr class="denial">`, ">gRPC<", ">HTTP<", ">/admin<", ">source not allowed<",
		">spiffe://cluster.local/ns/batch/sa/intruder<", ">mint budget used up<", ">conflicting X-Forwarded-Uri and X-Original-URI<"} {
		if !strings.Contains(page, want) {
			t.Errorf("rendered /status lacks %q", want)
		}
	}
	for _, ext := range []string{"href=", "src=", "https://", "http://"} {
		if strings.Contains(page, ext) {
			t.Errorf("the page links out: %s", ext)
		}
	}
	// The countdown was rendered by the page's script in the browser.
	if !strings.Contains(page, "59m") {
		t.Errorf("no countdown like 59m xxs in the rendered page")
	}

	raw := getBody(t, "http://"+p.adminAddr+"/status.json") + page + getBody(t, "http://"+p.adminAddr+"/metrics") + p.logText()
	for _, secret := range []string{"billing-secret-value", "search-secret-value", "acme-secret-value", "globex-secret-value", "admin-token-value", "devidp.",
		"payments-secret-value", "reports-wrong-secret-value", "caller-header-value", "query-secret-value"} {
		if strings.Contains(raw, secret) {
			t.Errorf("%q appears on the status page, status.json, metrics or logs", secret)
		}
	}
	metrics := getBody(t, "http://"+p.adminAddr+"/metrics")
	for _, want := range []string{`tokenbroker_cost_avoided_dollars_total{credential="billing"}`, `tokenbroker_mints_avoided_total{credential="broker:auth0"}`,
		`tokenbroker_broker_requests_total{result="cached",upstream="auth0"}`, `tokenbroker_cost_spent_dollars_total{credential="billing"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(metrics, "cust-acme") {
		t.Error("a broker client id is a metric label")
	}
	// Every series the Grafana example charts is one tokenbroker exports.
	dash, err := os.ReadFile(filepath.Join("..", "..", "examples", "grafana", "tokenbroker.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(dash) {
		t.Fatal("examples/grafana/tokenbroker.json is not JSON")
	}
	names := regexp.MustCompile(`tokenbroker_[a-z_]+`).FindAllString(string(dash), -1)
	if len(names) < 8 {
		t.Fatalf("dashboard charts only %v", names)
	}
	for _, n := range names {
		n = strings.TrimSuffix(n, "_bucket")
		if !strings.Contains(metrics, "\n"+n) && !strings.Contains(metrics, "# TYPE "+n+" ") {
			t.Errorf("dashboard uses %s, which /metrics does not have", n)
		}
	}
}

// artifacts is the repository's artifacts/ directory (gitignored).
func artifacts(t *testing.T) string {
	dir, err := filepath.Abs(filepath.Join("..", "..", "artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func getBody(t *testing.T, u string) string {
	t.Helper()
	res, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", u, res.StatusCode, b)
	}
	return string(b)
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(getBody(t, u)), v); err != nil {
		t.Fatalf("GET %s: %v", u, fmt.Errorf("decode: %w", err))
	}
}

// servingField reads a field of the "serving" log line.
func servingField(t *testing.T, p *process, field string) string {
	t.Helper()
	for _, line := range strings.Split(p.logText(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "serving" {
			if v, ok := m[field].(string); ok && v != "off" {
				return v
			}
		}
	}
	t.Fatalf("no %s address in the serving line:\n%s", field, p.logText())
	return ""
}
