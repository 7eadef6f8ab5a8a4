package credential

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testClient = "app"
	testSecret = "app-secret-5d41402abc4b2a76"
	weirdID    = "we:ird%+ id"
	weirdSec   = "s3:cr%et+ x=&y"
)

// seen is what the test IdP observed about the last token request.
type seen struct {
	mu            sync.Mutex
	accept, ctype string
	authorization string
}

// newIdP starts a dev IdP with two clients behind a recorder of request headers.
func newIdP(t *testing.T) (*devidp.Server, *httptest.Server, *seen) {
	t.Helper()
	idp := devidp.New(devidp.Options{
		Clients:  map[string]string{testClient: testSecret, weirdID: weirdSec},
		Lifetime: 20 * time.Minute,
	})
	s := &seen{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.accept, s.ctype, s.authorization = r.Header.Get("Accept"), r.Header.Get("Content-Type"), r.Header.Get("Authorization")
		s.mu.Unlock()
		idp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return idp, srv, s
}

func credentialFor(tokenURL string, mutate ...func(*config.Credential)) *config.Credential {
	c := &config.Credential{
		Name:         "test",
		Type:         "client_credentials",
		TokenURL:     tokenURL,
		ClientID:     testClient,
		ClientSecret: testSecret,
	}
	for _, m := range mutate {
		m(c)
	}
	return c
}

func newSource(t *testing.T, srv *httptest.Server, mutate ...func(*config.Credential)) *ClientCredentials {
	t.Helper()
	cc, err := NewClientCredentials(credentialFor(srv.URL+"/oauth/token", mutate...), srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	cc.Now = func() time.Time { return testNow }
	return cc
}

func TestClientCredentialsMints(t *testing.T) {
	tests := []struct {
		name       string
		mutate     func(*config.Credential)
		wantForm   url.Values // exactly what the IdP saw, client_secret removed
		wantClient string
		basic      bool
	}{
		{
			name:       "basic, no extras",
			mutate:     func(c *config.Credential) {},
			wantForm:   url.Values{"grant_type": {"client_credentials"}},
			wantClient: testClient, basic: true,
		},
		{
			name: "basic with scope, audience and params",
			mutate: func(c *config.Credential) {
				c.AuthMethod = "client_secret_basic"
				c.Scopes = []string{"read", "write"}
				c.Audience = "https://api.example.com"
				c.Params = map[string]string{"resource": "https://res.example.com", "client_id": testClient}
			},
			wantForm: url.Values{
				"grant_type": {"client_credentials"}, "scope": {"read write"},
				"audience": {"https://api.example.com"}, "resource": {"https://res.example.com"},
				"client_id": {testClient},
			},
			wantClient: testClient, basic: true,
		},
		{
			name: "post with scope",
			mutate: func(c *config.Credential) {
				c.AuthMethod = "client_secret_post"
				c.Scopes = []string{"api://x/.default"}
			},
			wantForm: url.Values{
				"grant_type": {"client_credentials"}, "scope": {"api://x/.default"}, "client_id": {testClient},
			},
			wantClient: testClient,
		},
		{
			name: "basic with reserved characters in id and secret",
			mutate: func(c *config.Credential) {
				c.ClientID, c.ClientSecret = weirdID, weirdSec
			},
			wantForm:   url.Values{"grant_type": {"client_credentials"}},
			wantClient: weirdID, basic: true,
		},
		{
			name: "post with reserved characters in id and secret",
			mutate: func(c *config.Credential) {
				c.ClientID, c.ClientSecret, c.AuthMethod = weirdID, weirdSec, "client_secret_post"
			},
			wantForm:   url.Values{"grant_type": {"client_credentials"}, "client_id": {weirdID}},
			wantClient: weirdID,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idp, srv, seen := newIdP(t)
			cc := newSource(t, srv, tt.mutate)
			tok, err := cc.Token(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(tok.Value, "devidp.") || tok.Type != "Bearer" ||
				!tok.Issued.Equal(testNow) || !tok.Expiry.Equal(testNow.Add(20*time.Minute)) {
				t.Errorf("token %+v", tok)
			}
			if got := idp.MintsFor(tt.wantClient); got != 1 {
				t.Errorf("MintsFor(%q) = %d, want 1", tt.wantClient, got)
			}
			if got := idp.LastForm(); fmt.Sprint(got) != fmt.Sprint(tt.wantForm) {
				t.Errorf("IdP saw form %v\nwant %v", got, tt.wantForm)
			}
			seen.mu.Lock()
			defer seen.mu.Unlock()
			if seen.accept != "application/json" || seen.ctype != "application/x-www-form-urlencoded" {
				t.Errorf("Accept %q Content-Type %q", seen.accept, seen.ctype)
			}
			if tt.basic {
				id, secret := tt.wantClient, testSecret
				if id == weirdID {
					secret = weirdSec
				}
				want := "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
				if seen.authorization != want {
					t.Errorf("Authorization %q, want %q", seen.authorization, want)
				}
			} else if seen.authorization != "" {
				t.Errorf("client_secret_post sent Authorization %q", seen.authorization)
			}
		})
	}
}

func TestClientCredentialsErrors(t *testing.T) {
	wrong := func(c *config.Credential) { c.ClientSecret = "wrong-secret-c4ca4238a0b9" }
	tests := []struct {
		name   string
		mutate func(*config.Credential)
		down   [3]string // status, body, Retry-After for SetDown
		check  func(t *testing.T, err error)
	}{
		{
			name:   "wrong secret basic",
			mutate: wrong,
			check:  wantIdP(401, "invalid_client", false),
		},
		{
			name:   "wrong secret post",
			mutate: func(c *config.Credential) { wrong(c); c.AuthMethod = "client_secret_post" },
			check:  wantIdP(401, "invalid_client", false),
		},
		{
			name:   "unknown client",
			mutate: func(c *config.Credential) { c.ClientID = "nobody" },
			check:  wantIdP(401, "invalid_client", false),
		},
		{
			name:  "429 with Retry-After",
			down:  [3]string{"429", `{"error":"slow_down"}`, "12"},
			check: wantIdP(429, "slow_down", true),
		},
		{
			name:  "503 HTML",
			down:  [3]string{"503", "<html>maintenance</html>", ""},
			check: wantIdP(503, "", true),
		},
		{
			name: "IdP echoes the secret",
			down: [3]string{"400", `{"error":"invalid_request","error_description":"bad secret ` + testSecret + `"}`, ""},
			check: func(t *testing.T, err error) {
				wantIdP(400, "invalid_request", false)(t, err)
				if !strings.Contains(err.Error(), "bad secret [redacted]") {
					t.Errorf("error %q", err)
				}
			},
		},
		{
			name:  "200 garbage",
			down:  [3]string{"200", "<html>" + testSecret + "</html>", ""},
			check: wantBad("not a JSON object"),
		},
		{
			name:  "200 without access_token",
			down:  [3]string{"200", `{"token_type":"Bearer"}`, ""},
			check: wantBad("no access_token"),
		},
		{
			name:  "200 body over 1 MiB",
			down:  [3]string{"200", `{"access_token":"x","pad":"` + strings.Repeat("a", maxBody) + `"}`, ""},
			check: wantBad("larger than 1048576 bytes"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idp, srv, _ := newIdP(t)
			if tt.down[0] != "" {
				var status int
				fmt.Sscan(tt.down[0], &status)
				idp.SetDown(status, tt.down[1], tt.down[2])
			}
			mutate := tt.mutate
			if mutate == nil {
				mutate = func(*config.Credential) {}
			}
			cc := newSource(t, srv, mutate)
			tok, err := cc.Token(context.Background())
			if err == nil {
				t.Fatalf("got token %+v, want an error", tok)
			}
			if tok != (Token{}) {
				t.Errorf("token %+v returned with an error", tok)
			}
			host := strings.TrimPrefix(srv.URL, "http://")
			if !strings.HasPrefix(err.Error(), "token request to "+host+": ") {
				t.Errorf("error %q does not name the host first", err)
			}
			for _, s := range []string{testSecret, "wrong-secret-c4ca4238a0b9", "devidp."} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q contains %q", err, s)
				}
			}
			tt.check(t, err)
		})
	}
}

func wantIdP(status int, code string, temporary bool) func(*testing.T, error) {
	return func(t *testing.T, err error) {
		t.Helper()
		var ie *IdPError
		if !errors.As(err, &ie) {
			t.Fatalf("error %v is not an *IdPError", err)
		}
		if ie.Status != status || ie.Code != code || ie.Temporary() != temporary {
			t.Errorf("got %+v temporary %v; want status %d code %q temporary %v", ie, ie.Temporary(), status, code, temporary)
		}
		if status == 429 && ie.RetryAfter != 12*time.Second {
			t.Errorf("RetryAfter %s", ie.RetryAfter)
		}
	}
}

func wantBad(substr string) func(*testing.T, error) {
	return func(t *testing.T, err error) {
		t.Helper()
		if !errors.Is(err, ErrBadResponse) || !strings.Contains(err.Error(), substr) {
			t.Errorf("error %q: want ErrBadResponse containing %q", err, substr)
		}
	}
}

func TestClientCredentialsTimeouts(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration                                // config timeout
		ctx     func() (context.Context, context.CancelFunc) // the caller's context
		want    error
	}{
		{
			name:    "configured timeout",
			timeout: 50 * time.Millisecond,
			ctx:     func() (context.Context, context.CancelFunc) { return context.Background(), func() {} },
			want:    context.DeadlineExceeded,
		},
		{
			name:    "caller deadline shorter than timeout",
			timeout: time.Hour,
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 50*time.Millisecond)
			},
			want: context.DeadlineExceeded,
		},
		{
			name:    "caller cancelled",
			timeout: time.Hour,
			ctx: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx, cancel
			},
			want: context.Canceled,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idp, srv, _ := newIdP(t)
			release := make(chan struct{})
			idp.SetHang(release)
			t.Cleanup(func() { close(release) }) // runs before srv.Close
			cc := newSource(t, srv, func(c *config.Credential) { c.Timeout = config.Duration(tt.timeout) })
			ctx, cancel := tt.ctx()
			defer cancel()
			_, err := cc.Token(ctx)
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			host := strings.TrimPrefix(srv.URL, "http://")
			if !strings.HasPrefix(err.Error(), "token request to "+host+": ") || strings.Contains(err.Error(), "/oauth/token") {
				t.Errorf("error %q: want host only", err)
			}
			if idp.Mints() != 0 {
				t.Errorf("mints %d", idp.Mints())
			}
		})
	}
}

func TestClientCredentialsNetworkErrorNamesHostOnly(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	u := srv.URL
	srv.Close() // nothing listens there now
	cc, err := NewClientCredentials(credentialFor(u+"/oauth/token?api-version=2&tenant=t1"), &http.Client{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cc.Token(context.Background())
	if err == nil {
		t.Fatal("no error from a closed port")
	}
	host := strings.TrimPrefix(u, "http://")
	if !strings.HasPrefix(err.Error(), "token request to "+host+": ") ||
		strings.Contains(err.Error(), "api-version") || strings.Contains(err.Error(), "/oauth") {
		t.Errorf("error %q: want host only", err)
	}
}

func TestClientCredentialsConcurrent(t *testing.T) {
	idp, srv, _ := newIdP(t)
	cc := newSource(t, srv)
	const n = 16
	var wg sync.WaitGroup
	tokens := make(chan string, n)
	for range n {
		wg.Go(func() {
			tok, err := cc.Token(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			tokens <- tok.Value
		})
	}
	wg.Wait()
	close(tokens)
	distinct := map[string]bool{}
	for v := range tokens {
		distinct[v] = true
	}
	if len(distinct) != n || idp.Mints() != n {
		t.Errorf("%d distinct tokens, %d mints; want %d", len(distinct), idp.Mints(), n)
	}
}

func TestClientCredentialsNoteIsLogged(t *testing.T) {
	idp, srv, _ := newIdP(t)
	idp.SetDown(200, `{"access_token":"`+tokenValue+`"}`, "")
	cc := newSource(t, srv, func(c *config.Credential) { c.DefaultLifetime = config.Duration(3 * time.Minute) })
	var logged, names []string
	cc.Logf = func(name, format string, args ...any) {
		names, logged = append(names, name), append(logged, fmt.Sprintf(format, args...))
	}
	tok, err := cc.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tok.Lifetime() != 3*time.Minute || tok.Type != "Bearer" {
		t.Errorf("token %+v", tok)
	}
	want := `credential "test": token response from ` + strings.TrimPrefix(srv.URL, "http://") +
		" adjusted: token_type missing; assumed Bearer; expires_in missing; assumed 3m0s"
	if len(logged) != 1 || logged[0] != want || names[0] != "test" {
		t.Errorf("logged %q for %q\nwant %q for \"test\"", logged, names, want)
	}
}

func TestClientCredentialsSecretFile(t *testing.T) {
	idp, srv, _ := newIdP(t)
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cc := newSource(t, srv, func(c *config.Credential) { c.ClientSecret, c.ClientSecretFile = "", path })
	if _, err := cc.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The file is read at each mint, so a rotation takes effect without a restart.
	if err := os.WriteFile(path, []byte("rotated-secret-0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := cc.Token(context.Background())
	var ie *IdPError
	if !errors.As(err, &ie) || ie.Code != "invalid_client" || strings.Contains(err.Error(), "rotated-secret-0123") {
		t.Errorf("after rotation to an unknown secret: %v", err)
	}
	if idp.Mints() != 1 {
		t.Errorf("mints %d", idp.Mints())
	}
}

func TestClientCredentialsDefaultClient(t *testing.T) {
	t.Cleanup(defaultClient().CloseIdleConnections)
	idp, srv, _ := newIdP(t)
	cc, err := NewClientCredentials(credentialFor(srv.URL+"/oauth/token"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cc.ep.Value().hc == http.DefaultClient || cc.ep.Value().hc.Timeout == 0 {
		t.Error("nil client did not give a default client with a timeout")
	}
	if _, err := cc.Token(context.Background()); err != nil {
		t.Fatal(err)
	}

	// The default client does not follow redirects: credentials are not replayed elsewhere.
	redirect := httptest.NewServer(http.RedirectHandler(srv.URL+"/oauth/token", http.StatusTemporaryRedirect))
	t.Cleanup(redirect.Close)
	cc, err = NewClientCredentials(credentialFor(redirect.URL, func(c *config.Credential) {
		c.AuthMethod = "client_secret_post"
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cc.Token(context.Background())
	wantIdP(307, "", false)(t, err)
	if idp.Requests() != 1 {
		t.Errorf("IdP got %d requests, want 1 (redirect followed?)", idp.Requests())
	}
}

func TestNewClientCredentialsRejects(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*config.Credential)
		want   string
	}{
		{"wrong type", func(c *config.Credential) { c.Type = "password" }, `type "password"`},
		{"no token_url", func(c *config.Credential) { c.TokenURL = "" }, "token_url is required"},
		{"relative token_url", func(c *config.Credential) { c.TokenURL = "/oauth/token" }, "absolute http or https"},
		{"ftp token_url", func(c *config.Credential) { c.TokenURL = "ftp://idp/token" }, "absolute http or https"},
		{"unparsable token_url", func(c *config.Credential) { c.TokenURL = "http://idp/%zz" }, "not a valid URL"},
		{"userinfo", func(c *config.Credential) { c.TokenURL = "https://u:" + testSecret + "@idp/token" }, "userinfo"},
		{"fragment", func(c *config.Credential) { c.TokenURL = "https://idp/token#x" }, "fragment"},
		{"no client_id", func(c *config.Credential) { c.ClientID = "" }, "client_id is required"},
		{"no secret", func(c *config.Credential) { c.ClientSecret = "" }, "client_secret or client_secret_file"},
		{"missing secret file", func(c *config.Credential) {
			c.ClientSecret, c.ClientSecretFile = "", "/nonexistent/secret"
		}, "client_secret_file"},
		{"auth method", func(c *config.Credential) { c.AuthMethod = "password" }, `auth_method "password"`},
		{"param grant_type", func(c *config.Credential) { c.Params = map[string]string{"grant_type": "password"} }, `"grant_type" would replace`},
		{"param client_secret", func(c *config.Credential) { c.Params = map[string]string{"client_secret": testSecret} }, "client_secret must be given"},
		{"param scope with scopes", func(c *config.Credential) {
			c.Scopes = []string{"a"}
			c.Params = map[string]string{"scope": "b"}
		}, `"scope" would replace`},
		{"param client_id with post", func(c *config.Credential) {
			c.AuthMethod = "client_secret_post"
			c.Params = map[string]string{"client_id": "other"}
		}, `"client_id" would replace`},
		{"empty param name", func(c *config.Credential) { c.Params = map[string]string{"": "x"} }, "empty parameter name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewClientCredentials(credentialFor("https://idp.example.com/oauth/token", tt.mutate), nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), `credential "test": `) || strings.Contains(err.Error(), testSecret) {
				t.Errorf("error %q", err)
			}
		})
	}
	if _, err := NewClientCredentials(nil, nil); err == nil {
		t.Error("nil configuration accepted")
	}
}

// A plain client_secret client carries none of the rarely used settings:
// it points at the one shared empty value (100k of them must not pay for
// assertion, grant-file and mTLS fields each).
func TestClientCredentialsShareEmptyRare(t *testing.T) {
	a, err := NewClientCredentials(credentialFor("https://idp.example.com/token"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.rare != &noRare {
		t.Fatalf("a client_secret_basic client keeps its own rare settings: %+v", *a.rare)
	}
	j, err := NewClientCredentials(credentialFor("https://idp.example.com/token", func(c *config.Credential) { c.AuthMethod = "client_secret_jwt" }), nil)
	if err != nil {
		t.Fatal(err)
	}
	if j.rare.assertionAud != "https://idp.example.com/token" {
		t.Fatalf("client_secret_jwt assertion audience %q, want the token URL", j.rare.assertionAud)
	}
}

// Clients of one IdP endpoint share one endpoint value (100k of them must
// not carry its token URL, host, method, timeouts and client each); a
// client that reaches it differently gets its own.
func TestClientCredentialsShareEndpoint(t *testing.T) {
	build := func(mutate ...func(*config.Credential)) *ClientCredentials {
		t.Helper()
		cc, err := NewClientCredentials(credentialFor("https://idp.example.com/token", mutate...), nil)
		if err != nil {
			t.Fatal(err)
		}
		return cc
	}
	a := build()
	b := build(func(c *config.Credential) { c.ClientID, c.ClientSecret = "other", "other-secret" })
	if a.ep != b.ep {
		t.Error("two clients of one endpoint do not share it")
	}
	for name, m := range map[string]func(*config.Credential){
		"auth method": func(c *config.Credential) { c.AuthMethod = "client_secret_post" },
		"timeout":     func(c *config.Credential) { c.Timeout = config.Duration(3 * time.Second) },
		"lifetime":    func(c *config.Credential) { c.DefaultLifetime = config.Duration(7 * time.Minute) },
		"token URL":   func(c *config.Credential) { c.TokenURL = "https://idp.example.com/other" },
	} {
		if c := build(m); c.ep == a.ep {
			t.Errorf("%s differs, endpoint shared", name)
		}
	}
}
