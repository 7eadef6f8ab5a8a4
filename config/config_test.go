package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// cred is a valid credential on lines 1-5; cases append lines from 6 on.
const cred = `credentials:
  billing:
    token_url: https://idp.example.com/token
    client_id: svc-billing
    client_secret: hunter2
`

func TestLoadExample(t *testing.T) {
	t.Setenv("BILLING_SECRET", "s3cr3t-from-env")
	cfg, err := Load("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Listen:        Listen{GRPC: "127.0.0.1:9191", Admin: "127.0.0.1:9193"},
		DefaultAction: "deny",
		Credentials: map[string]*Credential{"billing": {
			Name:            "billing",
			Type:            "client_credentials",
			TokenURL:        "https://idp.example.com/oauth/token",
			ClientID:        "svc-billing",
			ClientSecret:    "s3cr3t-from-env",
			AuthMethod:      "client_secret_basic",
			Scopes:          []string{"billing:read"},
			Audience:        "https://billing.example.com",
			Params:          map[string]string{"resource": "https://billing.example.com"},
			Header:          "Authorization",
			Format:          "Bearer {token}",
			Timeout:         Duration(10 * time.Second),
			DefaultLifetime: Duration(5 * time.Minute),
			Budget:          Budget{Per: Duration(DefaultBudgetWindow)},
		}},
		Routes: []Route{{
			Host: "billing.example.com", PathPrefix: "/v1", Methods: []string{"GET", "POST"},
			Credential: "billing", Line: 18,
		}},
		Cache:    Cache{MaxTokens: 100000, ExpiryMargin: Duration(30 * time.Second), RefreshAhead: 0.2},
		Shutdown: Shutdown{Drain: Duration(10 * time.Second)},
		Broker:   Broker{Path: "/oauth/token", NegativeTTL: Duration(5 * time.Second)},
		File:     "testdata/example.yaml",

		ForwardAuth: ForwardAuth{EnvoyPathPrefix: "/envoy"},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
		t.Errorf("got  %+v\nwant %+v", cfg.Credentials["billing"], want.Credentials["billing"])
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("testdata/does-not-exist.yaml")
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("got %v, want a not-exist error", err)
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Parse("", []byte(cred+"routes:\n  - {host: A.Example.COM:8443, credential: billing, methods: [get]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Credentials["billing"]
	got := []any{cfg.Listen, cfg.DefaultAction, cfg.Cache, cfg.Shutdown, c.Name, c.Type, c.AuthMethod, c.Header,
		c.Format, c.Timeout, c.DefaultLifetime, cfg.Routes[0].Host, cfg.Routes[0].Methods, cfg.Routes[0].Line}
	want := []any{Listen{GRPC: "127.0.0.1:9191", Admin: "127.0.0.1:9193"}, "deny",
		Cache{MaxTokens: 100000, ExpiryMargin: Duration(30 * time.Second), RefreshAhead: 0.2}, Shutdown{Drain: Duration(10 * time.Second)},
		"billing", "client_credentials", "client_secret_basic", "Authorization", "Bearer {token}",
		Duration(10 * time.Second), Duration(5 * time.Minute), "a.example.com", []string{"GET"}, 7}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
}

func TestExplicitValues(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		check      func(*Config) any
		want       any
	}{
		{"empty file", "", func(c *Config) any { return c.Listen.GRPC }, "127.0.0.1:9191"},
		{"only comments", "# nothing\n", func(c *Config) any { return c.DefaultAction }, "deny"},
		{"empty admin turns it off", "listen: {admin: ''}\n", func(c *Config) any { return c.Listen }, Listen{GRPC: "127.0.0.1:9191", Admin: ""}},
		{"null keeps default", "listen: {admin: ~}\n", func(c *Config) any { return c.Listen.Admin }, "127.0.0.1:9193"},
		{"allow", "default_action: allow\n", func(c *Config) any { return c.DefaultAction }, "allow"},
		{"underscored int", "cache: {max_tokens: 1_000}\n", func(c *Config) any { return c.Cache.MaxTokens }, int64(1000)},
		{"shutdown", "shutdown: {delay: 2s, drain: 0s}\n", func(c *Config) any { return c.Shutdown },
			Shutdown{Delay: Duration(2 * time.Second), Drain: 0}},
		{"wildcard host", cred + "routes: [{host: '*.Example.com', credential: billing}]\n",
			func(c *Config) any { return c.Routes[0].Host }, "*.example.com"},
		{"ipv6 host", cred + "routes: [{host: '[::1]:8080', credential: billing}]\n",
			func(c *Config) any { return c.Routes[0].Host }, "::1"},
		{"client_secret_post", cred + "    auth_method: client_secret_post\n",
			func(c *Config) any { return c.Credentials["billing"].AuthMethod }, "client_secret_post"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("tb.yaml", []byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if got := tc.check(cfg); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %#v, want %#v", got, tc.want)
			}
		})
	}
}

func TestMergeKeys(t *testing.T) {
	cfg, err := Parse("tb.yaml", []byte(`credentials:
  a: &base {token_url: https://idp/t, client_id: a, client_secret: x, scopes: [s]}
  b: {<<: *base, client_id: b}
  c: {<<: [*base], client_id: c, token_url: http://other/t}
`))
	if err != nil {
		t.Fatal(err)
	}
	b, c := cfg.Credentials["b"], cfg.Credentials["c"]
	if b.TokenURL != "https://idp/t" || b.ClientID != "b" || c.TokenURL != "http://other/t" || c.Scopes[0] != "s" {
		t.Errorf("merge: b=%+v c=%+v", b, c)
	}
}

func TestParseErrors(t *testing.T) {
	t.Setenv("SET_VAR", "value-from-env")
	for _, tc := range []struct{ name, yaml, want string }{
		// structure
		{"unknown top-level key", "listn:\n  grpc: x\n", "tb.yaml:1: listn: unknown field"},
		{"unknown listen key", "listen:\n  htp: x\n", "tb.yaml:2: listen.htp: unknown field"},
		{"unknown credential key", cred + "    scope: [a]\n", "tb.yaml:6: credentials.billing.scope: unknown field"},
		{"loader-only key is unknown", cred + "    name: x\n", "tb.yaml:6: credentials.billing.name: unknown field"},
		{"unknown route key", cred + "routes:\n  - host: a.com\n    credential: billing\n    path: /x\n", "tb.yaml:9: routes[0].path: unknown field"},
		{"unknown cache key", "cache:\n  max_token: 5\n", "tb.yaml:2: cache.max_token: unknown field"},
		{"unknown shutdown key", "shutdown:\n  grace: 5s\n", "tb.yaml:2: shutdown.grace: unknown field"},
		{"dotted credential name", "credentials:\n  a.b: {token_url: https://i/t, client_id: a, client_secret: b}\n  a:\n    token_url: https://i/t\n    client_id: a\n    client_secret: s\n    b: 1\n",
			`tb.yaml:7: credentials.a.b: unknown field`},
		{"dotted credential name field", "credentials:\n  a.b: {token_url: https://i/t, client_secret: b}\n",
			`tb.yaml:2: credentials["a.b"].client_id: required`},
		{"odd key", "listen:\n  \"a\\nb\": 1\n", `tb.yaml:2: listen["a\nb"]: unknown field`},
		{"duplicate key", "default_action: deny\ndefault_action: allow\n", "tb.yaml:2: default_action: duplicate key (first at line 1)"},
		{"not a mapping", "- a\n", "tb.yaml:1: must be a mapping, not a list"},
		{"alias key", "x: &k grpc\nlisten: {*k : a}\n", "tb.yaml:1: x: unknown field\ntb.yaml:2: listen.grpc: not a host:port address"},
		{"non-string key", "? [a]\n: b\n", "tb.yaml:1: keys must be strings, not a list"},
		{"syntax error", "listen:\n  grpc: [a\n", "tb.yaml:2: invalid YAML: did not find expected ',' or ']'"},
		{"syntax error line 1", "a: b: c\n", "tb.yaml:1: invalid YAML: mapping values are not allowed in this context"},
		{"unknown anchor", "listen:\n  grpc: *nope\n", "tb.yaml:2: invalid YAML: unknown anchor 'nope' referenced"},
		{"two documents", "listen: {}\n---\nlisten: {}\n", "tb.yaml:2: only one YAML document is allowed"},
		{"merge of a scalar", "listen: {<<: 1}\n", "tb.yaml:1: listen: merge key (<<) needs a mapping or a list of mappings"},
		{"merge of itself", "listen: &l {<<: *l}\n", "tb.yaml:1: listen: merge key (<<) includes its own mapping"},
		// types
		{"map for a string", "listen:\n  grpc: {a: b}\n", "tb.yaml:2: listen.grpc: must be a string, not a mapping"},
		{"list for a mapping", "cache: [1]\n", "tb.yaml:1: cache: must be a mapping, not a list"},
		{"scalar for a list", cred + "    scopes: read\n", "tb.yaml:6: credentials.billing.scopes: must be a list, not a scalar"},
		{"list for map of strings", cred + "    params: [a]\n", "tb.yaml:6: credentials.billing.params: must be a mapping, not a list"},
		{"map in a list of strings", cred + "routes: [{host: a.com, credential: billing, methods: [{a: b}]}]\n",
			"tb.yaml:6: routes[0].methods[0]: must be a string, not a mapping"},
		{"credentials as a list", "credentials: [a]\n", "tb.yaml:1: credentials: must be a mapping, not a list"},
		{"routes as a mapping", "routes: {a: b}\n", "tb.yaml:1: routes: must be a list, not a mapping"},
		{"string for int", "cache:\n  max_tokens: abc\n", "tb.yaml:2: cache.max_tokens: must be an integer"},
		{"int overflow", "cache:\n  max_tokens: 99999999999999999999\n", "tb.yaml:2: cache.max_tokens: must be an integer"},
		{"string for float", "cache:\n  refresh_ahead: lots\n", "tb.yaml:2: cache.refresh_ahead: must be a number"},
		{"bad duration", "cache:\n  expiry_margin: 30\n", "tb.yaml:2: cache.expiry_margin: must be a duration such as 30s or 5m"},
		// values
		{"default_action", "default_action: maybe\n", `tb.yaml:1: default_action: must be "deny" or "allow"`},
		{"listen without port", "listen:\n  grpc: localhost\n", "tb.yaml:2: listen.grpc: not a host:port address"},
		{"listen bad port", "listen:\n  admin: 'localhost:http'\n", "tb.yaml:2: listen.admin: not a host:port address"},
		{"credential type", cred + "    type: password\n", `tb.yaml:6: credentials.billing.type: unsupported credential type (supported: "client_credentials", "token_exchange", "jwt_bearer", "static")`},
		{"auth_method", cred + "    auth_method: password\n", `tb.yaml:6: credentials.billing.auth_method: must be "client_secret_basic", "client_secret_post", "client_secret_jwt", "private_key_jwt" or "tls_client_auth"`},
		{"private_key_jwt needs a key", cred + "    auth_method: private_key_jwt\n", `tb.yaml:2: credentials.billing.private_key_file: required by private_key_jwt`},
		{"relative token_url", "credentials:\n  billing:\n    token_url: /oauth/token\n    client_id: a\n    client_secret: b\n",
			"tb.yaml:3: credentials.billing.token_url: not an absolute http(s) URL"},
		{"ftp token_url", "credentials:\n  billing:\n    token_url: ftp://idp/token\n    client_id: a\n    client_secret: b\n",
			"tb.yaml:3: credentials.billing.token_url: not an absolute http(s) URL"},
		{"client_id missing", "credentials:\n  billing:\n    token_url: https://idp/t\n    client_secret: b\n",
			"tb.yaml:2: credentials.billing.client_id: required"},
		{"secret missing", "credentials:\n  billing:\n    token_url: https://idp/t\n    client_id: a\n",
			"tb.yaml:2: credentials.billing.client_secret: missing secret (set client_secret or client_secret_file)"},
		{"secret empty", "credentials:\n  billing:\n    token_url: https://idp/t\n    client_id: a\n    client_secret: ''\n",
			"tb.yaml:5: credentials.billing.client_secret: missing secret (set client_secret or client_secret_file)"},
		{"secret and secret file", cred + "    client_secret_file: /run/secret\n",
			"tb.yaml:6: credentials.billing.client_secret_file: client_secret and client_secret_file are mutually exclusive"},
		{"format", cred + "    format: Bearer\n", "tb.yaml:6: credentials.billing.format: must contain {token}"},
		{"header", cred + "    header: X Token\n", "tb.yaml:6: credentials.billing.header: not a valid HTTP header name"},
		{"empty header", cred + "    header: ''\n", "tb.yaml:6: credentials.billing.header: not a valid HTTP header name"},
		{"timeout", cred + "    timeout: 0s\n", "tb.yaml:6: credentials.billing.timeout: must be between 100ms and 5m"},
		{"default_lifetime", cred + "    default_lifetime: -1m\n", "tb.yaml:6: credentials.billing.default_lifetime: must be between 10s and 24h"},
		{"credential name", "credentials:\n  bill/ing: {token_url: https://idp/t, client_id: a, client_secret: b}\n",
			`tb.yaml:2: credentials["bill/ing"]: invalid credential name: use letters, digits, "_", "." and "-"`},
		{"route credential undefined", cred + "routes:\n  - {host: a.com, credential: billing}\n  - {host: b.com, credential: billing}\n  - {host: c.com, credential: billingg}\n",
			`tb.yaml:9: routes[2].credential: credential "billingg" is not defined`},
		{"route credential missing", cred + "routes:\n  - host: a.com\n", "tb.yaml:7: routes[0].credential: required"},
		{"route host missing", cred + "routes:\n  - credential: billing\n", "tb.yaml:7: routes[0].host: required"},
		{"route host inner wildcard", cred + "routes:\n  - {host: 'a.*.com', credential: billing}\n", "tb.yaml:7: routes[0].host: must be a host name or *.domain, optionally with :port"},
		{"route host bare wildcard", cred + "routes:\n  - {host: '*', credential: billing}\n", "tb.yaml:7: routes[0].host: must be a host name or *.domain, optionally with :port"},
		{"route host bad port", cred + "routes:\n  - {host: 'a.com:99999', credential: billing}\n", "tb.yaml:7: routes[0].host: must be a host name or *.domain, optionally with :port"},
		{"route host url", cred + "routes:\n  - {host: 'https://a.com/', credential: billing}\n", "tb.yaml:7: routes[0].host: must be a host name or *.domain, optionally with :port"},
		{"path_prefix", cred + "routes:\n  - {host: a.com, credential: billing, path_prefix: v1}\n", `tb.yaml:7: routes[0].path_prefix: must start with "/"`},
		{"ambiguous path_prefix", cred + "routes:\n  - {host: a.com, credential: billing, path_prefix: /v1/../admin}\n", `tb.yaml:7: routes[0].path_prefix: must be an unambiguous path: no dot segments, encoded "/" or "\", backslashes, control characters, "?" or "#"`},
		{"path_prefix with query", cred + "routes:\n  - {host: a.com, credential: billing, path_prefix: \"/v1?x\"}\n", `tb.yaml:7: routes[0].path_prefix: must be an unambiguous path: no dot segments, encoded "/" or "\", backslashes, control characters, "?" or "#"`},
		{"method", cred + "routes:\n  - host: a.com\n    credential: billing\n    methods: [GET, 'PO ST']\n", "tb.yaml:9: routes[0].methods[1]: not a valid HTTP method"},
		{"max_tokens", "cache:\n  max_tokens: 0\n", "tb.yaml:2: cache.max_tokens: must be between 1 and 1000000"},
		{"expiry_margin", "cache:\n  expiry_margin: -1s\n", "tb.yaml:2: cache.expiry_margin: must be between 0s and 1h"},
		{"refresh_ahead 0", "cache:\n  refresh_ahead: 0\n", "tb.yaml:2: cache.refresh_ahead: must be between 0.01 and 0.9"},
		{"refresh_ahead 1", "cache:\n  refresh_ahead: 1\n", "tb.yaml:2: cache.refresh_ahead: must be between 0.01 and 0.9"},
		{"refresh_ahead NaN", "cache:\n  refresh_ahead: NaN\n", "tb.yaml:2: cache.refresh_ahead: must be between 0.01 and 0.9"},
		{"drain", "shutdown:\n  drain: -1s\n", "tb.yaml:2: shutdown.drain: must be between 0s and 5m"},
		{"delay", "shutdown:\n  delay: -1s\n", "tb.yaml:2: shutdown.delay: must be between 0s and 5m"},
		// environment
		{"unset variable", "credentials:\n  billing:\n    token_url: https://idp/t\n    client_id: a\n    client_secret: ${BILLING_SECRET_UNSET}\n",
			"tb.yaml:5: credentials.billing.client_secret: environment variable BILLING_SECRET_UNSET is not set"},
		{"unterminated reference", "listen:\n  grpc: ${GRPC\n", "tb.yaml:2: listen.grpc: malformed ${VAR} reference (write $${ for a literal ${)"},
		{"bad variable name", "listen:\n  grpc: ${1X}\n", "tb.yaml:2: listen.grpc: malformed ${VAR} reference (write $${ for a literal ${)"},
		{"env value not echoed", cred + "routes: [{host: a.com, credential: '${SET_VAR}'}]\n", "tb.yaml:6: routes[0].credential: credential is not defined"},
		{"env in an int", "cache:\n  max_tokens: ${SET_VAR}\n", "tb.yaml:2: cache.max_tokens: must be an integer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("tb.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("no error; config %+v", cfg)
			}
			if cfg != nil {
				t.Errorf("config returned alongside an error")
			}
			if err.Error() != tc.want {
				t.Errorf("\ngot  %s\nwant %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "value-from-env") {
				t.Errorf("error echoes an environment value: %s", err)
			}
		})
	}
}

func TestMultipleErrors(t *testing.T) {
	_, err := Parse("", []byte(`listen:
  grpc: nope
  extra: 1
default_action: maybe
credentials:
  billing:
    token_url: ftp://x
    client_secret: [a]
routes:
  - host: a.com
    credential: nope
cache: {max_tokens: abc, refresh_ahead: 2}
`))
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("got %T %v, want Errors", err, err)
	}
	want := strings.Join([]string{
		"<config>:2: listen.grpc: not a host:port address",
		"<config>:3: listen.extra: unknown field",
		`<config>:4: default_action: must be "deny" or "allow"`,
		"<config>:6: credentials.billing.client_id: required",
		"<config>:7: credentials.billing.token_url: not an absolute http(s) URL",
		"<config>:8: credentials.billing.client_secret: must be a string, not a list",
		`<config>:11: routes[0].credential: credential "nope" is not defined`,
		"<config>:12: cache.max_tokens: must be an integer",
		"<config>:12: cache.refresh_ahead: must be between 0.01 and 0.9",
	}, "\n")
	if err.Error() != want {
		t.Errorf("\ngot:\n%s\nwant:\n%s", err, want)
	}
	var one *Error
	if !errors.As(err, &one) || one.Line != 2 || one.Field != "listen.grpc" {
		t.Errorf("errors.As(*Error) = %+v", one)
	}
}

func TestEnvExpansion(t *testing.T) {
	t.Setenv("TB_HOST", "idp.example.com")
	t.Setenv("TB_EMPTY", "")
	for _, tc := range []struct{ in, want string }{
		{"https://${TB_HOST}/token", "https://idp.example.com/token"},
		{"https://${TB_HOST}${TB_EMPTY}/${TB_HOST}", "https://idp.example.com/idp.example.com"},
		{"https://a/$${TB_HOST}", "https://a/${TB_HOST}"},
		{"https://a/$$${TB_HOST}", "https://a/$${TB_HOST}"},
		{"https://a/$TB_HOST/$5/{x}$", "https://a/$TB_HOST/$5/{x}$"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			cfg, err := Parse("", []byte(fmt.Sprintf("credentials:\n  a: {token_url: %q, client_id: a, client_secret: b}\n", tc.in)))
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Credentials["a"].TokenURL; got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestClientSecretFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	big := strings.Repeat("x", maxSecretFile+1)
	for _, tc := range []struct {
		name, path, want, wantErr string
	}{
		{"trims one newline", write("nl", "s3cret\n\n"), "s3cret\n", ""},
		{"trims crlf", write("crlf", "s3cret\r\n"), "s3cret", ""},
		{"no newline", write("plain", "s3cret"), "s3cret", ""},
		{"empty file", write("empty", "\n"), "", "client_secret_file: file is empty: missing secret"},
		{"missing file", filepath.Join(dir, "nope"), "", fmt.Sprintf("client_secret_file: cannot read %q: no such file or directory", filepath.Join(dir, "nope"))},
		{"directory", dir, "", "is a directory"},
		{"too large", write("big", big), "", "larger than 64 KiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("tb.yaml", []byte(fmt.Sprintf(
				"credentials:\n  a: {token_url: https://idp/t, client_id: a, client_secret_file: %q}\n", tc.path)))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "tb.yaml:2: credentials.a.client_secret_file: ") {
					t.Fatalf("got %v, want ...%s", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "xxxxxxxx") || strings.Contains(err.Error(), "s3cret") {
					t.Errorf("error echoes file content: %s", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Credentials["a"].ClientSecret.Reveal(); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestSecretsNeverEchoed puts a secret wherever a user might misplace it and
// checks that no error (and no formatted config) contains it.
func TestSecretsNeverEchoed(t *testing.T) {
	const secret = "Zq9-SECRET-7Xv"
	t.Setenv("TB_SECRET", secret)
	t.Setenv("TB_SECRET_PATH", "/nonexistent/"+secret)
	for _, tc := range []struct{ name, yaml string }{
		{"secret as an int", "cache: {max_tokens: " + secret + "}\n"},
		{"secret as a duration", "cache: {expiry_margin: " + secret + "}\n"},
		{"secret as a float", "cache: {refresh_ahead: " + secret + "}\n"},
		{"secret literal as a credential reference", cred + "routes: [{host: a.com, credential: 'p@ss " + secret + "'}]\n"},
		{"secret as a credential reference", cred + "routes: [{host: a.com, credential: '${TB_SECRET}'}]\n"},
		{"secret in a host", cred + "routes: [{host: '" + secret + "/x', credential: billing}]\n"},
		{"secret in token_url", "credentials:\n  a: {token_url: '" + secret + "', client_id: a, client_secret: '" + secret + "'}\n"},
		{"secret under an unknown key", "client_secret: " + secret + "\n"},
		{"secret in the wrong section", "listen: {client_secret: " + secret + "}\n"},
		{"secret in listen", "listen: {grpc: '" + secret + "'}\n"},
		{"secret in default_action", "default_action: '${TB_SECRET}'\n"},
		{"secret in header", "credentials:\n  a: {token_url: https://i/t, client_id: a, client_secret: '${TB_SECRET}', header: '" + secret + " x'}\n"},
		{"secret with a malformed reference", "credentials:\n  a: {token_url: https://i/t, client_id: a, client_secret: '" + secret + "${x'}\n"},
		{"secret next to an unset variable", "credentials:\n  a: {token_url: https://i/t, client_id: a, client_secret: '" + secret + "${TB_UNSET}'}\n"},
		{"secret with a bad type", "credentials:\n  a: {token_url: x, client_id: a, client_secret: {" + secret + ": 1}}\n"},
		{"secret file path from env", "credentials:\n  a: {token_url: https://i/t, client_id: a, client_secret_file: '${TB_SECRET_PATH}'}\n"},
		{"secret with a syntax error", "credentials:\n  a: {client_secret: \"" + secret + "\n"},
		{"secret after a tab", "credentials:\n\ta: {client_secret: " + secret + "}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("tb.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "SECRET-7") {
				t.Errorf("error echoes the secret:\n%s", err)
			}
		})
	}

	cfg, err := Parse("", []byte("credentials:\n  a: {token_url: https://i/t, client_id: a, client_secret: '${TB_SECRET}'}\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		if s := fmt.Sprintf(verb, *cfg.Credentials["a"]); strings.Contains(s, secret) {
			t.Errorf("%s of a Credential prints the secret: %s", verb, s)
		}
	}
}

func TestIdentity(t *testing.T) {
	base := Credential{
		Name: "a", Type: "client_credentials", TokenURL: "https://idp/t", ClientID: "id",
		ClientSecret: "s1", AuthMethod: "client_secret_basic", Scopes: []string{"a", "b"},
		Audience: "aud", Params: map[string]string{"resource": "r", "x": "y"},
		Header: "Authorization", Format: "Bearer {token}", Timeout: Duration(time.Second),
	}
	id := base.Identity()
	if len(id) != 64 {
		t.Fatalf("Identity() = %q, want 64 hex digits", id)
	}
	for _, tc := range []struct {
		name   string
		modify func(*Credential)
		same   bool
	}{
		{"unchanged", func(*Credential) {}, true},
		{"name", func(c *Credential) { c.Name = "b" }, true},
		{"secret", func(c *Credential) { c.ClientSecret = "s2" }, true},
		{"secret file", func(c *Credential) { c.ClientSecretFile = "/f" }, true},
		{"header", func(c *Credential) { c.Header = "X-Token" }, true},
		{"format", func(c *Credential) { c.Format = "{token}" }, true},
		{"timeouts", func(c *Credential) { c.Timeout, c.DefaultLifetime = 5, 6 }, true},
		{"scope order", func(c *Credential) { c.Scopes = []string{"b", "a"} }, true},
		{"params copy", func(c *Credential) { c.Params = map[string]string{"x": "y", "resource": "r"} }, true},
		{"type", func(c *Credential) { c.Type = "other" }, false},
		{"token_url", func(c *Credential) { c.TokenURL = "https://idp/t2" }, false},
		{"client_id", func(c *Credential) { c.ClientID = "id2" }, false},
		{"auth_method", func(c *Credential) { c.AuthMethod = "client_secret_post" }, false},
		{"scopes", func(c *Credential) { c.Scopes = []string{"a"} }, false},
		{"scopes split", func(c *Credential) { c.Scopes = []string{"a b"} }, false},
		{"scope moved to audience", func(c *Credential) { c.Scopes, c.Audience = []string{"a"}, "b" }, false},
		{"audience", func(c *Credential) { c.Audience = "aud2" }, false},
		{"param value", func(c *Credential) { c.Params = map[string]string{"resource": "r2", "x": "y"} }, false},
		{"param key/value shift", func(c *Credential) { c.Params = map[string]string{"resourcer": "", "x": "y"} }, false},
		{"no params", func(c *Credential) { c.Params = nil }, false},
		{"id into url", func(c *Credential) { c.TokenURL, c.ClientID = "https://idp/tid", "" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			c.Scopes = append([]string(nil), base.Scopes...)
			tc.modify(&c)
			if got := c.Identity(); (got == id) != tc.same {
				t.Errorf("Identity changed = %v, want %v", got != id, !tc.same)
			}
		})
	}
	if !reflect.DeepEqual(base.Scopes, []string{"a", "b"}) {
		t.Errorf("Identity reordered the caller's scopes")
	}
	// Pinned: a change here silently empties every token cache on upgrade.
	if want := "48beabbedf565630a8021f672db703fe8feb609ba8ed2eba45fbb5943822a1c6"; id != want {
		t.Errorf("Identity() = %s, want %s", id, want)
	}
}

// TestIdentityStaticValue: inline static values are part of the identity,
// through a keyed hash only.
func TestIdentityStaticValue(t *testing.T) {
	mapsCred := Credential{Name: "maps", Type: "static", Value: "maps-key-1111", Header: "X-Api-Key", Format: "{token}"}
	weather := mapsCred
	weather.Name, weather.Value = "weather", "weather-key-2222"
	if mapsCred.Identity() == weather.Identity() {
		t.Fatal("two static credentials with different inline values share one identity")
	}
	same := mapsCred
	same.Name, same.Header = "maps2", "X-Other"
	if mapsCred.Identity() != same.Identity() {
		t.Error("the same inline value under another name and header changed the identity")
	}
	fromFile := Credential{Type: "static", ValueFile: "/run/secrets/maps"}
	if fromFile.Identity() == mapsCred.Identity() {
		t.Error("an inline value and a value file share one identity")
	}
	// Keyed: under another process key the same value has another identity,
	// so the identity (a Redis key name) cannot be matched to a guessed value.
	id := mapsCred.Identity()
	saved := valueKey
	t.Cleanup(func() { valueKey = saved })
	valueKey = bytes.Repeat([]byte{7}, 32)
	if mapsCred.Identity() == id {
		t.Error("the identity of an inline value does not depend on the HMAC key")
	}
	unkeyed := sha256.Sum256([]byte(mapsCred.Value))
	for _, leak := range []string{string(mapsCred.Value), hex.EncodeToString(unkeyed[:])} {
		if strings.Contains(id, leak) || strings.Contains(mapsCred.Identity(), leak) {
			t.Errorf("identity %s shows the value or its unkeyed hash", id)
		}
	}
}

// TestExpansionBounded feeds documents that aliases and merge keys blow up
// exponentially or quadratically; Parse must stay fast and say why it stopped.
func TestExpansionBounded(t *testing.T) {
	var merges, fanout strings.Builder
	merges.WriteString("a0: &a0 {x: 1}\n")
	for i := 1; i < 30; i++ {
		fmt.Fprintf(&merges, "a%d: &a%d {<<: [*a%d, *a%d, *a%d]}\n", i, i, i-1, i-1, i-1)
	}
	merges.WriteString("cache: {<<: *a29}\n")
	fanout.WriteString("credentials:\n  c0: &c {token_url: https://i/t, client_id: a, client_secret: b, params: {")
	for i := range 900 { // within maxListEntries: the work budget must stop it
		fmt.Fprintf(&fanout, "k%d: v, ", i)
	}
	fanout.WriteString("}}\n")
	for i := 1; i < 2000; i++ {
		fmt.Fprintf(&fanout, "  c%d: *c\n", i)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"nested merges", merges.String(), "tb.yaml:1: cache.x: unknown field"},
		{"alias fan-out", fanout.String(), "credentials.c"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// No wall-clock bound here (timed tests flake on a busy machine): the
			// fan-out case must hit the work budget, and a runaway expansion
			// would hit the test timeout.
			_, err := Parse("tb.yaml", []byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ...%s", err, tc.want)
			}
			if tc.name == "alias fan-out" && !strings.Contains(err.Error(), "document too large or too deeply aliased") {
				t.Errorf("got %v, want the budget error", err)
			}
		})
	}
}
