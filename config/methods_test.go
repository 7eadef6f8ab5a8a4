package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestProviderPresets(t *testing.T) {
	for _, tc := range []struct {
		name, yaml  string
		url, method string
		scopes      []string
		audience    string
	}{
		{"auth0", "provider: auth0\n    domain: acme.eu.auth0.com\n    audience: https://api.acme.com\n",
			"https://acme.eu.auth0.com/oauth/token", "client_secret_post", nil, "https://api.acme.com"},
		{"entra audience becomes .default scope", "provider: entra\n    tenant: 11111111-2222-3333-4444-555555555555\n    audience: api://billing\n",
			"https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555/oauth2/v2.0/token", "client_secret_post", []string{"api://billing/.default"}, ""},
		{"entra scopes", "provider: entra\n    tenant: contoso.onmicrosoft.com\n    scopes: [https://graph.microsoft.com/.default]\n",
			"https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token", "client_secret_post", []string{"https://graph.microsoft.com/.default"}, ""},
		{"okta", "provider: okta\n    domain: dev-1.okta.com\n    scopes: [invoices.read]\n",
			"https://dev-1.okta.com/oauth2/default/v1/token", "client_secret_basic", []string{"invoices.read"}, ""},
		{"keycloak", "provider: keycloak\n    domain: https://sso.example.com/\n    realm: prod\n",
			"https://sso.example.com/realms/prod/protocol/openid-connect/token", "client_secret_basic", nil, ""},
		{"explicit token_url and auth_method win", "provider: auth0\n    token_url: https://login.acme.com/oauth/token\n    auth_method: client_secret_basic\n    audience: a\n",
			"https://login.acme.com/oauth/token", "client_secret_basic", nil, "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := "credentials:\n  c:\n    client_id: id\n    client_secret: s\n    " + tc.yaml
			cfg, err := Parse("tb.yaml", []byte(y))
			if err != nil {
				t.Fatal(err)
			}
			c := cfg.Credentials["c"]
			if c.TokenURL != tc.url || c.AuthMethod != tc.method || c.Audience != tc.audience || strings.Join(c.Scopes, " ") != strings.Join(tc.scopes, " ") {
				t.Errorf("got url=%s method=%s scopes=%v audience=%q", c.TokenURL, c.AuthMethod, c.Scopes, c.Audience)
			}
		})
	}
}

func TestPresetCostPerMint(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       float64
	}{
		{"entra assumes External ID's price", "provider: entra\n    tenant: t\n    audience: api://x\n", EntraCostPerMint},
		{"explicit cost wins, even zero", "provider: entra\n    tenant: t\n    audience: api://x\n    cost_per_mint: 0\n", 0},
		{"other presets assume nothing", "provider: okta\n    domain: o\n    scopes: [a]\n", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("tb.yaml", []byte("credentials:\n  c:\n    client_id: id\n    client_secret: s\n    "+tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Credentials["c"].CostPerMint; got != tc.want {
				t.Fatalf("cost_per_mint %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMethodErrors(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(key, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown provider", "credentials:\n  c:\n    provider: ping\n    client_id: a\n    client_secret: s\n",
			`tb.yaml:3: credentials.c.provider: unknown provider (supported: "auth0", "entra", "okta", "keycloak")`},
		{"auth0 domain", "credentials:\n  c:\n    provider: auth0\n    audience: x\n    client_id: a\n    client_secret: s\n",
			`tb.yaml:2: credentials.c.domain: required by provider auth0 (or set token_url)`},
		{"keycloak realm", "credentials:\n  c:\n    provider: keycloak\n    domain: kc\n    client_id: a\n    client_secret: s\n",
			`tb.yaml:2: credentials.c.realm: required by provider keycloak (or set token_url)`},
		{"okta audience", "credentials:\n  c:\n    provider: okta\n    domain: o\n    audience: x\n    client_id: a\n    client_secret: s\n",
			`tb.yaml:5: credentials.c.audience: provider okta takes scopes, not audience`},
		{"signing alg", "credentials:\n  c:\n    token_url: https://i/t\n    client_id: a\n    auth_method: private_key_jwt\n    private_key_file: " + key + "\n    signing_alg: HS256\n",
			`tb.yaml:7: credentials.c.signing_alg: must be "RS256", "PS256" or "ES256"`},
		{"missing key file", "credentials:\n  c:\n    token_url: https://i/t\n    client_id: a\n    auth_method: private_key_jwt\n    private_key_file: " + filepath.Join(dir, "nope") + "\n",
			`tb.yaml:6: credentials.c.private_key_file: cannot read "` + filepath.Join(dir, "nope") + `": no such file or directory`},
		{"tls cert", "credentials:\n  c:\n    token_url: https://i/t\n    client_id: a\n    auth_method: tls_client_auth\n    client_key_file: " + key + "\n",
			`tb.yaml:2: credentials.c.client_cert_file: required by tls_client_auth`},
		{"exchange subject", "credentials:\n  c:\n    type: token_exchange\n    token_url: https://i/t\n",
			`tb.yaml:2: credentials.c.subject_token_file: required by token_exchange`},
		{"exchange none with secret method", "credentials:\n  c:\n    type: token_exchange\n    token_url: https://i/t\n    subject_token_file: " + key + "\n    auth_method: client_secret_post\n    client_id: a\n",
			`tb.yaml:2: credentials.c.client_secret: missing secret (set client_secret or client_secret_file)`},
		{"none for client_credentials", "credentials:\n  c:\n    token_url: https://i/t\n    auth_method: none\n",
			`tb.yaml:4: credentials.c.auth_method: only token_exchange and jwt_bearer may go without client authentication`},
		{"jwt_bearer assertion", "credentials:\n  c:\n    type: jwt_bearer\n    token_url: https://i/t\n",
			`tb.yaml:2: credentials.c.assertion_file: required by jwt_bearer`},
		{"static value", "credentials:\n  c:\n    type: static\n    header: x-api-key\n    format: '{token}'\n",
			`tb.yaml:2: credentials.c.value: required (set value, e.g. ${API_KEY}, or value_file)`},
		{"static with token_url", "credentials:\n  c:\n    type: static\n    value: v\n    token_url: https://i/t\n",
			`tb.yaml:5: credentials.c.token_url: not used by type static`},
		{"allowed_sources", cred + "    allowed_sources: ['spiffe://td/ns/*/sa/pay*']\n",
			`tb.yaml:6: credentials.billing.allowed_sources[0]: not a CIDR, an IP address or a principal ("*" may only stand for a whole path segment)`},
		{"remove injected header", cred + "routes:\n  - {host: a.com, credential: billing, remove_headers: [x-api-key, Authorization]}\n",
			`tb.yaml:7: routes[0].remove_headers[1]: is the header credential "billing" sets; it is overwritten anyway`},
		{"listen tls key", "listen:\n  tls:\n    cert_file: " + key + "\n",
			`tb.yaml:2: listen.tls.key_file: required when listen.tls is set`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("tb.yaml", []byte(tc.yaml))
			if err == nil || err.Error() != tc.want {
				t.Errorf("\ngot  %v\nwant %s", err, tc.want)
			}
		})
	}
}

func TestMethodsValid(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("API_KEY", "k-from-env")
	y := `credentials:
  ex:
    type: token_exchange
    token_url: https://sts.example.com/token
    subject_token_file: ` + f + `
    audience: billing
  exauth:
    type: token_exchange
    token_url: https://sts.example.com/token
    subject_token_file: ` + f + `
    client_id: a
    private_key_file: ` + f + `
  key:
    type: static
    value: ${API_KEY}
    header: x-api-key
    format: '{token}'
    allowed_sources: [10.0.0.0/8, 192.168.1.1, 'spiffe://cluster.local/ns/payments/sa/*']
`
	cfg, err := Parse("tb.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Credentials["ex"]; got.AuthMethod != "none" || got.SubjectTokenType != TokenTypeJWT {
		t.Errorf("exchange without client: auth_method %q, subject_token_type %q", got.AuthMethod, got.SubjectTokenType)
	}
	if got := cfg.Credentials["exauth"].AuthMethod; got != "private_key_jwt" {
		t.Errorf("exchange with key: auth_method %q", got)
	}
	if got := cfg.Credentials["key"].Value.Reveal(); got != "k-from-env" {
		t.Errorf("static value %q", got)
	}
	if cfg.Credentials["ex"].Identity() == cfg.Credentials["exauth"].Identity() {
		t.Error("different exchanges share an identity")
	}
}
