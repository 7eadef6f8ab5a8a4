package config

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
)

// Token types of RFC 8693 §3.
const (
	TokenTypeJWT         = "urn:ietf:params:oauth:token-type:jwt"
	TokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
	TokenTypeIDToken     = "urn:ietf:params:oauth:token-type:id_token"
)

// set reports whether field (a path such as credentials.x.auth_method) was
// written in the file, as opposed to holding its default.
func (d *decoder) set(field string) bool {
	_, ok := d.lines[field]
	return ok
}

// EntraCostPerMint is the dollars per token the entra preset assumes for the
// cost meter when cost_per_mint is not set.
const EntraCostPerMint = 0.001

// applyPreset fills token_url and the parameter style of a known IdP. Fields
// written in the file win over the preset.
func (d *decoder) applyPreset(c *Credential, path string) {
	if c.Provider == "" {
		return
	}
	p := path + ".provider"
	before := len(d.errs)
	defer func() {
		if len(d.errs) > before {
			d.failed[path+".token_url"] = true // already explained by the preset's message
		}
	}()
	base := func(field, v string) string {
		if !d.check(v != "", path+"."+field, "required by provider %s (or set token_url)", c.Provider) {
			return ""
		}
		if strings.HasPrefix(v, "https://") || strings.HasPrefix(v, "http://") {
			return strings.TrimSuffix(v, "/")
		}
		return "https://" + strings.TrimSuffix(v, "/")
	}
	explicitURL := d.set(path + ".token_url")
	switch c.Provider {
	case "auth0":
		// Auth0 names the API with audience; scopes are optional.
		if !explicitURL {
			c.TokenURL = base("domain", c.Domain) + "/oauth/token"
		}
		if !d.set(path + ".auth_method") {
			c.AuthMethod = "client_secret_post"
		}
		d.check(c.Audience != "" || d.set(path+".params"), path+".audience", "required by provider auth0 (the API identifier)")
	case "entra":
		// Entra names the API with a scope of <resource>/.default and has
		// no audience parameter.
		if !explicitURL {
			d.check(c.Tenant != "", path+".tenant", "required by provider entra (or set token_url)")
			c.TokenURL = "https://login.microsoftonline.com/" + c.Tenant + "/oauth2/v2.0/token"
		}
		if !d.set(path + ".auth_method") {
			c.AuthMethod = "client_secret_post"
		}
		if c.Audience != "" && len(c.Scopes) == 0 {
			c.Scopes = []string{strings.TrimSuffix(c.Audience, "/") + "/.default"}
			c.Audience = ""
		}
		d.check(c.Audience == "", path+".audience", "provider entra takes scopes; set either audience alone (sent as <audience>/.default) or scopes")
		d.check(len(c.Scopes) > 0, path+".scopes", `required by provider entra (e.g. "api://my-api/.default"), or set audience`)
		if !d.set(path + ".cost_per_mint") {
			// Entra External ID's list price per client-credentials token;
			// feeds the cost meter only. Workforce tenants: set cost_per_mint: 0.
			c.CostPerMint = EntraCostPerMint
		}
	case "okta":
		// Okta's custom authorization servers take scopes, not audience.
		if !explicitURL {
			c.TokenURL = base("domain", c.Domain) + "/oauth2/default/v1/token"
		}
		d.check(c.Audience == "", path+".audience", "provider okta takes scopes, not audience")
	case "keycloak":
		if !explicitURL {
			b := base("domain", c.Domain)
			if d.check(c.Realm != "", path+".realm", "required by provider keycloak (or set token_url)") {
				c.TokenURL = b + "/realms/" + c.Realm + "/protocol/openid-connect/token"
			}
		}
	default:
		d.check(false, p, `unknown provider (supported: "auth0", "entra", "okta", "keycloak")`)
	}
}

// checkClientAuth checks the fields auth_method needs. optional says the
// grant may go without client authentication (token exchange, JWT bearer).
func (d *decoder) checkClientAuth(c *Credential, path string, optional bool) {
	if optional && !d.set(path+".auth_method") {
		// Client authentication follows from what is configured.
		switch {
		case c.ClientID == "":
			c.AuthMethod = "none"
		case c.PrivateKeyFile != "":
			c.AuthMethod = "private_key_jwt"
		case c.ClientCertFile != "":
			c.AuthMethod = "tls_client_auth"
		}
	}
	am := path + ".auth_method"
	switch c.AuthMethod {
	case "client_secret_basic", "client_secret_post", "client_secret_jwt":
		d.check(c.ClientID != "", path+".client_id", "required")
		d.checkSecret(c, path)
	case "private_key_jwt":
		d.check(c.ClientID != "", path+".client_id", "required")
		d.checkFile(c.PrivateKeyFile, path+".private_key_file", "required by private_key_jwt")
		d.checkFile(c.CertificateFile, path+".certificate_file", "")
		switch c.SigningAlg {
		case "", "RS256", "PS256", "ES256":
		default:
			d.check(false, path+".signing_alg", `must be "RS256", "PS256" or "ES256"`)
		}
	case "tls_client_auth":
		d.check(c.ClientID != "", path+".client_id", "required")
		d.checkFile(c.ClientCertFile, path+".client_cert_file", "required by tls_client_auth")
		d.checkFile(c.ClientKeyFile, path+".client_key_file", "required by tls_client_auth")
	case "none":
		d.check(optional, am, "only token_exchange and jwt_bearer may go without client authentication")
	default:
		d.check(false, am, `must be "client_secret_basic", "client_secret_post", "client_secret_jwt", "private_key_jwt" or "tls_client_auth"`)
	}
	if c.CAFile != "" {
		d.checkFile(c.CAFile, path+".ca_file", "")
	}
}

// checkFile requires a readable file at p unless p is "" and why is "".
func (d *decoder) checkFile(p, field, why string) {
	if p == "" {
		d.check(why == "", field, "%s", why)
		return
	}
	f, err := os.Open(p)
	if err != nil {
		d.check(false, field, "cannot read %q: %v", p, unwrapPath(err))
		return
	}
	_ = f.Close()
}

// checkGrant checks the type-specific fields of the grants beyond client_credentials.
func (d *decoder) checkGrant(c *Credential, path string) {
	d.check(httpURL(c.TokenURL), path+".token_url", "not an absolute http(s) URL")
	switch c.Type {
	case "token_exchange":
		d.checkFile(c.SubjectTokenFile, path+".subject_token_file", "required by token_exchange")
		if c.SubjectTokenType == "" {
			c.SubjectTokenType = TokenTypeJWT
		}
		d.check(strings.HasPrefix(c.SubjectTokenType, "urn:"), path+".subject_token_type", "must be a token type URN, e.g. %s", TokenTypeJWT)
	case "jwt_bearer":
		d.checkFile(c.AssertionFile, path+".assertion_file", "required by jwt_bearer")
	}
	d.checkClientAuth(c, path, true)
}

// checkStatic checks a static credential: exactly one of value and value_file.
func (d *decoder) checkStatic(c *Credential, path string) {
	hasVal, hasFile := d.set(path+".value"), d.set(path+".value_file")
	switch {
	case hasVal && hasFile:
		d.check(false, path+".value_file", "value and value_file are mutually exclusive")
	case hasFile && c.ValueFile == "":
		d.check(false, path+".value_file", "must not be empty")
	case hasFile:
		b, err := readLimited(c.ValueFile, MaxHeaderValue)
		if err != nil {
			d.check(false, path+".value_file", "cannot read %q: %v", c.ValueFile, unwrapPath(err))
			return
		}
		v := strings.TrimSpace(string(b)) // as the static source reads it
		if d.check(v != "", path+".value_file", "file is empty: missing value") {
			d.checkHeaderValue(c, v, path+".value_file")
		}
	default:
		if d.check(c.Value != "", path+".value", "required (set value, e.g. ${API_KEY}, or value_file)") {
			d.checkHeaderValue(c, c.Value.Reveal(), path+".value")
		}
	}
	for _, f := range []string{"token_url", "client_id", "client_secret", "client_secret_file", "scopes", "audience", "auth_method"} {
		d.check(!d.set(path+"."+f), path+"."+f, "not used by type static")
	}
}

// checkHeaderValue checks that static value v, in c's format, can be sent
// as a header on every request. No message includes the value.
func (d *decoder) checkHeaderValue(c *Credential, v, field string) {
	if n := len(c.Format) - len("{token}") + len(v); n > MaxHeaderValue {
		d.check(false, field, "the header it makes is %d bytes, more than %d KiB", n, MaxHeaderValue>>10)
		return
	}
	if p := HeaderValueProblem(v); p != "" {
		d.check(false, field, "%s", p)
	}
}

// checkSources checks allowed_sources: CIDRs, IP addresses or principals
// (SPIFFE IDs, "*" standing for one whole path segment).
func (d *decoder) checkSources(c *Credential, path string) {
	for i, s := range c.AllowedSources {
		f := fmt.Sprintf("%s.allowed_sources[%d]", path, i)
		if _, err := netip.ParsePrefix(s); err == nil {
			continue
		}
		if _, err := netip.ParseAddr(s); err == nil {
			continue
		}
		ok := s != "" && !strings.ContainsAny(s, " \t\r\n")
		for seg := range strings.SplitSeq(s, "/") {
			if strings.Contains(seg, "*") && seg != "*" {
				ok = false
			}
		}
		d.check(ok, f, `not a CIDR, an IP address or a principal ("*" may only stand for a whole path segment)`)
	}
}

// checkRemoveHeaders lower-cases a route's remove_headers and refuses the
// header its credential injects: Envoy removes after setting, so listing it
// would strip the token again.
func (d *decoder) checkRemoveHeaders(r *Route, path string, creds map[string]*Credential) {
	for i, h := range r.RemoveHeaders {
		f := fmt.Sprintf("%s.remove_headers[%d]", path, i)
		if !d.check(token(h), f, "not a valid HTTP header name") {
			continue
		}
		r.RemoveHeaders[i] = strings.ToLower(h)
		if c := creds[r.Credential]; c != nil {
			d.check(!strings.EqualFold(h, c.Header), f, "is the header credential %q sets; it is overwritten anyway", r.Credential)
		}
	}
}

// checkListenTLS requires cert_file and key_file together and readable files.
func (d *decoder) checkListenTLS(t ListenTLS) {
	if t.CertFile == "" && t.KeyFile == "" && t.ClientCAFile == "" {
		return
	}
	d.checkFile(t.CertFile, "listen.tls.cert_file", "required when listen.tls is set")
	d.checkFile(t.KeyFile, "listen.tls.key_file", "required when listen.tls is set")
	if t.ClientCAFile != "" {
		d.checkFile(t.ClientCAFile, "listen.tls.client_ca_file", "")
	}
}
