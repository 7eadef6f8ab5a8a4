package broker

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tokenbroker/tokenbroker/budget"
	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type env struct {
	idp    *devidp.Server
	broker *Broker
	tokens *cache.Tokens
	url    string
	hc     *http.Client
	arrive func() // called as each request reaches the IdP; set before the first
}

// setup starts devidp and a broker in front of it, both on loopback.
func setup(t testing.TB, up config.BrokerUpstream, clients map[string]string, with ...func(*Options)) *env {
	t.Helper()
	idp := devidp.New(devidp.Options{Clients: clients})
	e := &env{idp: idp}
	idpSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e.arrive != nil {
			e.arrive()
		}
		idp.ServeHTTP(w, r)
	}))
	t.Cleanup(idpSrv.Close)
	up.TokenURL = idpSrv.URL + "/oauth/token"
	if up.Name == "" {
		up.Name = "auth0"
	}
	if len(up.PassParams) == 0 {
		up.PassParams = []string{"audience", "scope", "resource"}
	}
	up.Timeout = config.Duration(10 * time.Second)
	up.DefaultLifetime = config.Duration(5 * time.Minute)
	var b *Broker
	tokens, err := cache.New(cache.Options{ExpiryMargin: 30 * time.Second, MayMint: func(k cache.Key) error { return b.MayMint(k) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tokens.Close)
	opts := Options{
		Config: config.Broker{Path: "/oauth/token", NegativeTTL: config.Duration(5 * time.Second), Upstreams: []config.BrokerUpstream{up}},
		Tokens: tokens, Meter: budget.NewMeter(nil, nil, nil, nil),
	}
	for _, f := range with {
		f(&opts)
	}
	b, err = New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(b)
	t.Cleanup(srv.Close)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 200}}
	t.Cleanup(hc.CloseIdleConnections)
	e.broker, e.tokens, e.url, e.hc = b, tokens, srv.URL+"/oauth/token", hc
	return e
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
}

// post sends a client credentials request; basic selects client_secret_basic.
func (e *env) post(t *testing.T, id, secret string, basic bool, extra url.Values) answer {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}}
	for k, v := range extra {
		form[k] = v
	}
	if !basic {
		form.Set("client_id", id)
		form.Set("client_secret", secret)
	}
	req, _ := http.NewRequest(http.MethodPost, e.url, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic {
		req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	}
	res, err := e.hc.Do(req)
	if err != nil {
		t.Errorf("post: %v", err)
		return answer{}
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	a := answer{status: res.StatusCode, header: res.Header}
	if err := json.Unmarshal(raw, &a.body); err != nil {
		t.Errorf("body %q: %v", raw, err)
	}
	return a
}

func TestCacheHit(t *testing.T) {
	e := setup(t, config.BrokerUpstream{}, map[string]string{"cust-1": "s1"})
	first := e.post(t, "cust-1", "s1", true, url.Values{"scope": {"write read"}, "audience": {"https://api"}})
	// Same client, same scope set in another order, client_secret_post: the same token.
	second := e.post(t, "cust-1", "s1", false, url.Values{"scope": {"read  write"}, "audience": {" https://api"}})
	if first.status != 200 || second.status != 200 {
		t.Fatalf("statuses %d, %d: %v %v", first.status, second.status, first.body, second.body)
	}
	if first.body["access_token"] != second.body["access_token"] {
		t.Error("second request was not served the cached token")
	}
	if n := e.idp.Mints(); n != 1 {
		t.Errorf("IdP minted %d tokens, want 1", n)
	}
	for _, a := range []answer{first, second} {
		if a.header.Get("Cache-Control") != "no-store" || a.header.Get("Pragma") != "no-cache" {
			t.Errorf("headers %v, want Cache-Control: no-store and Pragma: no-cache", a.header)
		}
		if a.body["token_type"] != "Bearer" || a.body["scope"] != "read write" {
			t.Errorf("body %v: want token_type Bearer and scope", a.body)
		}
		if exp := a.body["expires_in"].(float64); exp > 3600 || exp < 3500 {
			t.Errorf("expires_in %v, want the remaining part of 3600", exp)
		}
	}
	// Another scope is another token.
	if third := e.post(t, "cust-1", "s1", true, url.Values{"scope": {"read"}}); third.body["access_token"] == first.body["access_token"] {
		t.Error("a different scope was served the same token")
	}
	if n := e.idp.Mints(); n != 2 {
		t.Errorf("IdP minted %d tokens, want 2", n)
	}
}

func TestExpiresInIsRemainingLifetime(t *testing.T) {
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e := setup(t, config.BrokerUpstream{}, map[string]string{"c": "s"})
	e.idp.SetLifetime(time.Hour)
	tokens, err := cache.New(cache.Options{Now: clock, MayMint: e.broker.MayMint})
	if err != nil {
		t.Fatal(err)
	}
	defer tokens.Close()
	e.broker.tokens = tokens
	a := e.post(t, "c", "s", true, nil)
	mu.Lock()
	now = now.Add(20 * time.Minute)
	mu.Unlock()
	b := e.post(t, "c", "s", true, nil)
	if a.body["access_token"] != b.body["access_token"] {
		t.Fatal("not served from cache")
	}
	if got := b.body["expires_in"].(float64); got > 2400 || got < 2390 {
		t.Errorf("expires_in after 20m of 1h = %v, want ≤ 2400", got)
	}
}

func TestSecretMismatchNeverServed(t *testing.T) {
	tests := []struct {
		name  string
		order []string // secrets in request order; "s" is right
	}{
		{"right then wrong", []string{"s", "wrong", "s"}},
		{"wrong then right", []string{"wrong", "s", "wrong", "s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := setup(t, config.BrokerUpstream{}, map[string]string{"c": "s"})
			var good string
			for i, secret := range tt.order {
				a := e.post(t, "c", secret, i%2 == 0, nil)
				if secret != "s" {
					if a.status != http.StatusUnauthorized || a.body["error"] != "invalid_client" || a.body["access_token"] != nil {
						t.Errorf("request %d with a wrong secret: %d %v, want the IdP's 401 invalid_client", i, a.status, a.body)
					}
					continue
				}
				if a.status != 200 {
					t.Fatalf("request %d with the right secret: %d %v", i, a.status, a.body)
				}
				if good != "" && a.body["access_token"] != good {
					t.Errorf("request %d: right secret not served the cached token", i)
				}
				good = a.body["access_token"].(string)
			}
			if n := e.idp.Mints(); n != 1 {
				t.Errorf("IdP minted %d, want 1", n)
			}
		})
	}
}

func TestConcurrentWrongSecretsNeverServed(t *testing.T) {
	e := setup(t, config.BrokerUpstream{}, map[string]string{"c": "s"})
	var wg sync.WaitGroup
	var mu sync.Mutex
	leaked := 0
	for i := range 100 {
		wg.Go(func() {
			secret := "s"
			if i%2 == 1 {
				secret = fmt.Sprintf("wrong-%d", i%5)
			}
			a := e.post(t, "c", secret, true, nil)
			if secret != "s" && a.body["access_token"] != nil {
				mu.Lock()
				leaked++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if leaked > 0 {
		t.Errorf("%d requests with a wrong secret got a token", leaked)
	}
	if a := e.post(t, "c", "s", true, nil); a.status != 200 {
		t.Errorf("right secret after the storm: %d %v", a.status, a.body)
	}
}

func TestIdPErrorsPassThrough(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		body       string
		wantStatus int
		wantError  string
		negative   bool // a retry within the window must not reach the IdP
	}{
		{"forbidden", 403, `{"error":"unauthorized_client","error_description":"Client has not been granted scopes"}`, 403, "unauthorized_client", true},
		{"bad request", 400, `{"error":"invalid_scope"}`, 400, "invalid_scope", true},
		{"server error", 503, `<html>down</html>`, 503, "temporarily_unavailable", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := setup(t, config.BrokerUpstream{}, map[string]string{"c": "s"})
			e.idp.SetDown(tt.status, tt.body, "")
			a := e.post(t, "c", "s", true, url.Values{"scope": {"x"}})
			if a.status != tt.wantStatus || a.body["error"] != tt.wantError || a.body["access_token"] != nil {
				t.Fatalf("got %d %v, want %d error %q", a.status, a.body, tt.wantStatus, tt.wantError)
			}
			before := e.idp.Requests()
			b := e.post(t, "c", "s", true, url.Values{"scope": {"x"}})
			if b.status != tt.wantStatus {
				t.Errorf("retry: %d %v", b.status, b.body)
			}
			if tt.negative && e.idp.Requests() != before {
				t.Errorf("retry within the negative window reached the IdP")
			}
			if b.header.Get("Cache-Control") != "no-store" {
				t.Error("error answer without Cache-Control: no-store")
			}
		})
	}
}

func TestMintLimit(t *testing.T) {
	e := setup(t, config.BrokerUpstream{Limit: config.RateLimit{Mints: 2, Per: config.Duration(time.Hour)}},
		map[string]string{"c": "s", "other": "o"})
	for _, scope := range []string{"a", "b"} {
		if a := e.post(t, "c", "s", true, url.Values{"scope": {scope}}); a.status != 200 {
			t.Fatalf("mint %s: %d %v", scope, a.status, a.body)
		}
	}
	// Over the limit: a new key is refused with Retry-After...
	a := e.post(t, "c", "s", true, url.Values{"scope": {"c"}})
	if a.status != http.StatusTooManyRequests || a.header.Get("Retry-After") == "" {
		t.Errorf("third mint: %d Retry-After %q, want 429 with Retry-After", a.status, a.header.Get("Retry-After"))
	}
	// ...while cached tokens keep being served, and other clients are unaffected.
	if a := e.post(t, "c", "s", true, url.Values{"scope": {"a"}}); a.status != 200 {
		t.Errorf("cached token over the limit: %d %v", a.status, a.body)
	}
	if a := e.post(t, "other", "o", true, nil); a.status != 200 {
		t.Errorf("another client: %d %v", a.status, a.body)
	}
	if n := e.idp.Mints(); n != 3 {
		t.Errorf("IdP minted %d, want 3", n)
	}
	for _, c := range e.broker.Clients() {
		if want := map[string]int64{"c": 1}[c.ClientID]; c.Limited != want || c.Rejected != 0 {
			t.Errorf("status: %s limited %d, rejected %d; want %d and 0", c.ClientID, c.Limited, c.Rejected, want)
		}
	}
}

func TestBucketRefills(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	up := &upstream{BrokerUpstream: config.BrokerUpstream{Limit: config.RateLimit{Mints: 10, Per: config.Duration(time.Hour)}}}
	b := up.newBucket(start)
	for i := range 10 {
		if _, ok := b.take(start); !ok {
			t.Fatalf("take %d refused", i)
		}
	}
	wait, ok := b.take(start)
	if ok || wait != 6*time.Minute {
		t.Errorf("empty bucket: ok=%v wait=%s, want refused for 6m", ok, wait)
	}
	if _, ok := b.take(start.Add(6 * time.Minute)); !ok {
		t.Error("refused after refill time")
	}
}

func TestBudgetEnforcedPerClient(t *testing.T) {
	e := setup(t, config.BrokerUpstream{Budget: config.Budget{Mints: 1, Per: config.Duration(time.Hour), Enforce: true}},
		map[string]string{"c": "s"})
	if a := e.post(t, "c", "s", true, url.Values{"scope": {"a"}}); a.status != 200 {
		t.Fatalf("first: %d %v", a.status, a.body)
	}
	a := e.post(t, "c", "s", true, url.Values{"scope": {"b"}})
	if a.status != http.StatusTooManyRequests || !strings.Contains(fmt.Sprint(a.body["error_description"]), "budget") {
		t.Errorf("over budget: %d %v, want 429 naming the budget", a.status, a.body)
	}
	if a := e.post(t, "c", "s", true, url.Values{"scope": {"a"}}); a.status != 200 {
		t.Errorf("cached token over budget: %d", a.status)
	}
}

func TestOneMintPerClient(t *testing.T) {
	tests := []struct {
		clients, perClient int
	}{
		{1, 1000},
		{100, 10},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d clients", tt.clients), func(t *testing.T) {
			secrets := map[string]string{}
			for i := range tt.clients {
				secrets[fmt.Sprintf("cust-%d", i)] = fmt.Sprintf("secret-%d", i)
			}
			e := setup(t, config.BrokerUpstream{ClientIDs: []string{"cust-*"}}, secrets)
			release := make(chan struct{})
			e.idp.SetHang(release) // hold the first mints until every client's is in flight
			arrived := make(chan struct{}, tt.clients*tt.perClient)
			e.arrive = func() { arrived <- struct{}{} }
			var wg sync.WaitGroup
			var mu sync.Mutex
			tokens := map[string]map[string]bool{}
			for i := range tt.clients * tt.perClient {
				id := fmt.Sprintf("cust-%d", i%tt.clients)
				wg.Go(func() {
					a := e.post(t, id, secrets[id], i%2 == 0, nil)
					mu.Lock()
					defer mu.Unlock()
					if a.status != 200 {
						t.Errorf("%s: %d %v", id, a.status, a.body)
						return
					}
					if tokens[id] == nil {
						tokens[id] = map[string]bool{}
					}
					tokens[id][a.body["access_token"].(string)] = true
				})
			}
			// Let requests pile up on the single-flight, then release the IdP.
			for range tt.clients {
				<-arrived
			}
			close(release)
			wg.Wait()
			if n := e.idp.Mints(); n != int64(tt.clients) {
				t.Errorf("%d clients × %d requests: IdP minted %d, want %d", tt.clients, tt.perClient, n, tt.clients)
			}
			for id, set := range tokens {
				if len(set) != 1 {
					t.Errorf("%s got %d different tokens", id, len(set))
				}
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	e := setup(t, config.BrokerUpstream{ClientIDs: []string{"cust-*"}}, map[string]string{"cust-1": "s"})
	tests := []struct {
		name   string
		form   url.Values
		status int
		code   string
	}{
		{"no client", url.Values{"grant_type": {"client_credentials"}}, 401, "invalid_client"},
		{"wrong grant", url.Values{"grant_type": {"password"}, "client_id": {"cust-1"}, "client_secret": {"s"}}, 400, "unsupported_grant_type"},
		{"no upstream", url.Values{"grant_type": {"client_credentials"}, "client_id": {"other"}, "client_secret": {"s"}}, 401, "invalid_client"},
		{"repeated", url.Values{"grant_type": {"client_credentials"}, "client_id": {"cust-1"}, "client_secret": {"s"}, "scope": {"a", "b"}}, 400, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := e.hc.PostForm(e.url, tt.form)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var body map[string]any
			_ = json.NewDecoder(res.Body).Decode(&body)
			if res.StatusCode != tt.status || body["error"] != tt.code {
				t.Errorf("got %d %v, want %d %s", res.StatusCode, body, tt.status, tt.code)
			}
		})
	}
	if e.idp.Requests() != 0 {
		t.Error("a malformed request reached the IdP")
	}
}

// TestWrongSecretsDoNotSpendTheClientsMints: a stranger guessing secrets for
// a client id must not use up that client's mint limit.
func TestWrongSecretsDoNotSpendTheClientsMints(t *testing.T) {
	e := setup(t, config.BrokerUpstream{Limit: config.RateLimit{Mints: 1, Per: config.Duration(time.Hour)},
		Budget: config.Budget{Mints: 1, Per: config.Duration(time.Hour), Enforce: true}},
		map[string]string{"c": "s"})
	for i := range 5 {
		if a := e.post(t, "c", fmt.Sprintf("guess-%d", i), true, nil); a.status != http.StatusUnauthorized {
			t.Errorf("guess %d: %d %v", i, a.status, a.body)
		}
	}
	if a := e.post(t, "c", "s", true, nil); a.status != 200 {
		t.Fatalf("the real client after the guesses: %d %v", a.status, a.body)
	}
	// Its one mint is spent now: a new scope is refused, the cached token is not.
	if a := e.post(t, "c", "s", true, url.Values{"scope": {"more"}}); a.status != http.StatusTooManyRequests {
		t.Errorf("second mint: %d, want 429", a.status)
	}
	if a := e.post(t, "c", "s", true, nil); a.status != 200 {
		t.Errorf("cached token: %d", a.status)
	}
}
