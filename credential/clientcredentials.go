package credential

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
	"unique"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/telemetry"
)

const (
	// DefaultTimeout bounds one token request when the configuration does not.
	DefaultTimeout = 10 * time.Second
	// maxBody is the most of a token response that is read.
	maxBody = 1 << 20
)

// Grant types of RFC 8693 and RFC 7523 §2.1.
const (
	GrantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	GrantJWTBearer     = "urn:ietf:params:oauth:grant-type:jwt-bearer"
)

// ClientCredentials mints tokens with the OAuth 2.0 client credentials grant (RFC 6749 §4.4)
// and, with the same client authentication methods, the token exchange (RFC 8693) and JWT
// bearer (RFC 7523 §2.1) grants: every grant that is one POST to a token endpoint.
// It is safe for concurrent use once built; set its exported fields before the first Token call.
//
// Sources built from a configuration (Hooks.FromConfig) are of another type without the
// two fields: there the functions are shared through the endpoint, not carried by each of
// 100,000 credentials.
type ClientCredentials struct {
	// Now stamps Issued and Expiry; nil means time.Now. The stamp is taken just before the
	// request is sent, so a slow IdP shortens the token's believed life rather than lengthening it.
	Now func() time.Time
	// Logf, when set, receives one line for every adjustment made to an IdP's answer (see
	// Response.Note), with the credential's name. It never receives a token or secret. The
	// name is an argument so that one function serves every source: a closure per source
	// holding its name is 32 bytes per credential, 3 MB at 100k.
	Logf func(credential, format string, args ...any)

	client
}

// client is a client-credentials source without functions of its own: the
// Source Hooks.FromConfig builds (80 bytes a credential), and the part of
// ClientCredentials that is not its exported fields.
type client struct {
	name     string
	clientID string
	secret   string // from client_secret; "" when rare.secretFile is used
	form     string // the fixed form fields, encoded once (a map per credential is costly at 100k credentials)
	ep       unique.Handle[endpoint]
	rare     *ccRare // never nil; &noRare when none of it is set
}

// endpoint is how a client reaches its IdP, and what is done with the
// answer: usually the same for thousands of one IdP's clients, so they
// share one copy (unique.Make) instead of carrying ~80 bytes each. Read
// once per mint.
type endpoint struct {
	tokenURL string
	host     string // for messages: no userinfo, no query
	auth     string // auth_method
	basic    bool   // client_secret_basic rather than client_secret_post
	timeout  time.Duration
	lifetime time.Duration // when the IdP omits expires_in
	hc       *http.Client

	// hooks are the functions of the Hooks that built the source (nil:
	// none); a ClientCredentials' own Now and Logf win over them.
	hooks *Hooks
	// format is the header format split around {token} when the source
	// fills Token.Header itself (built by FromConfig); zero otherwise.
	format affixes
	// formats reports whether format applies.
	formats bool
}

// ccRare is what only some auth methods and grants use, kept out of line:
// a fleet of one IdP's client_secret clients (100k of them) shares the one
// empty value instead of carrying ~80 unused bytes each.
type ccRare struct {
	secretFile   string      // read at each mint, so a rotated file is picked up
	assertionAud string      // aud of client assertions (private_key_jwt, client_secret_jwt)
	key          *keyFile    // private_key_jwt
	grantParam   string      // "subject_token" or "assertion": read from grantFile at each mint
	grantFile    string      // token_exchange, jwt_bearer
	cert         *clientCert // tls_client_auth: checked at each mint so a rotation closes pooled connections
}

var noRare ccRare

// NewClientCredentials checks c and builds a Source for it. hc nil means a shared client with
// connection, TLS-handshake and overall timeouts that does not follow redirects (a redirect
// is reported as an *IdPError rather than replaying credentials to another URL); with
// tls_client_auth or ca_file, hc nil means such a client with the configured certificates.
func NewClientCredentials(c *config.Credential, hc *http.Client) (*ClientCredentials, error) {
	cl, err := newClient(c, hc, endpoint{})
	if err != nil {
		return nil, err
	}
	return &ClientCredentials{client: cl}, nil
}

// newClient checks c and builds its client; shared holds the endpoint's
// hooks and format, the rest of it is set from c.
func newClient(c *config.Credential, hc *http.Client, shared endpoint) (client, error) {
	if c == nil {
		return client{}, errors.New("credential: nil configuration")
	}
	fail := func(format string, args ...any) (client, error) {
		return client{}, fmt.Errorf("credential %q: %s", c.Name, fmt.Sprintf(format, args...))
	}
	form := url.Values{}
	var grantParam, grantFile string
	switch c.Type {
	case "", "client_credentials":
		form.Set("grant_type", "client_credentials")
	case "token_exchange":
		form.Set("grant_type", GrantTokenExchange)
		if c.SubjectTokenFile == "" {
			return fail("subject_token_file is required")
		}
		grantParam, grantFile = "subject_token", c.SubjectTokenFile
		form.Set("subject_token_type", cmp.Or(c.SubjectTokenType, config.TokenTypeJWT))
		if c.RequestedTokenType != "" {
			form.Set("requested_token_type", c.RequestedTokenType)
		}
	case "jwt_bearer":
		form.Set("grant_type", GrantJWTBearer)
		if c.AssertionFile == "" {
			return fail("assertion_file is required")
		}
		grantParam, grantFile = "assertion", c.AssertionFile
	default:
		return fail("type %q is not client_credentials, token_exchange or jwt_bearer", c.Type)
	}
	if grantFile != "" {
		if _, err := readGrantFile(grantParam, grantFile); err != nil {
			return fail("%v", err)
		}
	}
	u, err := url.Parse(c.TokenURL)
	switch {
	case c.TokenURL == "":
		return fail("token_url is required")
	case err != nil:
		return fail("token_url is not a valid URL")
	case u.Scheme != "https" && u.Scheme != "http" || u.Host == "":
		return fail("token_url must be an absolute http or https URL")
	case u.User != nil:
		return fail("token_url must not carry userinfo; use client_id and client_secret")
	case u.Fragment != "":
		return fail("token_url must not have a #fragment")
	}

	auth := c.AuthMethod
	if auth == "" {
		auth = "client_secret_basic"
		if grantFile != "" && c.ClientID == "" {
			auth = "none"
		}
	}
	if c.ClientID == "" && auth != "none" {
		return fail("client_id is required")
	}
	secret := c.ClientSecret.Reveal()
	var key *keyFile
	switch auth {
	case "client_secret_basic", "client_secret_post", "client_secret_jwt":
		if secret == "" && c.ClientSecretFile == "" {
			return fail("client_secret or client_secret_file is required")
		}
		if secret == "" {
			if _, err := readSecretFile(c.ClientSecretFile); err != nil {
				return fail("%v", err)
			}
		}
	case "private_key_jwt":
		if c.PrivateKeyFile == "" {
			return fail("private_key_file is required by private_key_jwt")
		}
		key = &keyFile{path: c.PrivateKeyFile, kid: c.KeyID, alg: c.SigningAlg, certPath: c.CertificateFile}
		if _, err := key.current(); err != nil {
			return fail("%v", err)
		}
		secret = ""
	case "tls_client_auth":
		if c.ClientCertFile == "" || c.ClientKeyFile == "" {
			return fail("client_cert_file and client_key_file are required by tls_client_auth")
		}
		secret = ""
	case "none":
		if grantFile == "" {
			return fail("auth_method none is only for token_exchange and jwt_bearer")
		}
		secret = ""
	default:
		return fail("auth_method %q is not one of client_secret_basic, client_secret_post, client_secret_jwt, private_key_jwt, tls_client_auth", c.AuthMethod)
	}
	basic := auth == "client_secret_basic"

	if len(c.Scopes) > 0 {
		form.Set("scope", strings.Join(c.Scopes, " "))
	}
	if c.Audience != "" {
		form.Set("audience", c.Audience)
	}
	if c.Resource != "" {
		form.Set("resource", c.Resource)
	}
	if !basic && c.ClientID != "" {
		form.Set("client_id", c.ClientID)
	}
	keys := make([]string, 0, len(c.Params))
	for k := range c.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch {
		case k == "":
			return fail("params: empty parameter name")
		case k == "client_secret":
			return fail("params: client_secret must be given as client_secret, not a parameter")
		case form.Has(k), k == grantParam, k == "client_assertion", k == "client_assertion_type":
			return fail("params: %q would replace a parameter set from another field", k)
		}
		form.Set(k, c.Params[k])
	}

	timeout := c.Timeout.D()
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	lifetime := c.DefaultLifetime.D()
	if lifetime <= 0 {
		lifetime = DefaultLifetime
	}
	var cert *clientCert
	if hc == nil {
		var certFile, keyFile string
		if auth == "tls_client_auth" {
			certFile, keyFile = c.ClientCertFile, c.ClientKeyFile
		}
		if certFile != "" || c.CAFile != "" {
			if hc, cert, err = tokenClient(certFile, keyFile, c.CAFile); err != nil {
				return fail("%v", err)
			}
		} else {
			hc = defaultClient()
		}
	}
	// The token URL, its host and the fixed form are usually the same for
	// thousands of credentials of one IdP: one shared copy of each
	// (unique.Make) instead of one per credential.
	tokenURL := unique.Make(u.String()).Value()
	rare := &ccRare{secretFile: c.ClientSecretFile, key: key, grantParam: grantParam, grantFile: grantFile, cert: cert}
	switch auth {
	case "client_secret_jwt", "private_key_jwt":
		rare.assertionAud = cmp.Or(c.AssertionAudience, tokenURL)
	}
	if *rare == noRare {
		rare = &noRare
	}
	shared.tokenURL, shared.host, shared.auth, shared.basic = tokenURL, u.Host, auth, basic
	shared.timeout, shared.lifetime, shared.hc = timeout, lifetime, hc
	return client{
		name:     c.Name,
		clientID: c.ClientID,
		secret:   secret,
		form:     unique.Make(form.Encode()).Value(),
		ep:       unique.Make(shared),
		rare:     rare,
	}, nil
}

// Token requests a new token from the IdP. Errors name the token endpoint's host; an IdP's
// refusal is an *IdPError, an unusable 2xx answer wraps ErrBadResponse, and a deadline or
// cancellation still satisfies errors.Is(err, context.DeadlineExceeded / context.Canceled).
func (cc *ClientCredentials) Token(ctx context.Context) (Token, error) {
	ep := cc.ep.Value()
	now, logf := cc.Now, cc.Logf
	if now == nil {
		now = ep.hooks.now()
	}
	if logf == nil {
		logf = ep.hooks.logf()
	}
	return cc.token(ctx, &ep, now, logf)
}

// Token is ClientCredentials.Token with the endpoint's hooks.
func (cc *client) Token(ctx context.Context) (Token, error) {
	ep := cc.ep.Value()
	return cc.token(ctx, &ep, ep.hooks.now(), ep.hooks.logf())
}

// token mints, stamping with now (not nil), tells logf (may be nil) of
// any adjustment to the answer, and fills Header when ep has a format.
func (cc *client) token(ctx context.Context, ep *endpoint, now func() time.Time, logf func(credential, format string, args ...any)) (Token, error) {
	telemetry.NoteIdP(ctx, ep.host, ep.auth) // on the cache's mint span, when traced
	resp, err := cc.mint(ctx, ep, now)
	if err != nil {
		return Token{}, fmt.Errorf("token request to %s: %w", ep.host, err)
	}
	if resp.Note != "" && logf != nil {
		logf(cc.name, "credential %q: token response from %s adjusted: %s", cc.name, ep.host, resp.Note)
	}
	t := resp.Token
	if ep.formats {
		t.format(ep.format)
	}
	return t, nil
}

func (cc *client) mint(ctx context.Context, ep *endpoint, clock func() time.Time) (Response, error) {
	var secret string // whatever must not appear in an error: the client secret or grant token
	switch ep.auth {
	case "client_secret_basic", "client_secret_post", "client_secret_jwt":
		secret = cc.secret
		if secret == "" {
			s, err := readSecretFile(cc.rare.secretFile)
			if err != nil {
				return Response{}, err
			}
			secret = s
		}
	}

	if cc.rare.cert != nil {
		// Connections made with a replaced certificate are closed here, so
		// this request presents the new one.
		if _, err := cc.rare.cert.get(); err != nil {
			return Response{}, err
		}
	}
	form := make(url.Values, 3) // the fields that change per mint
	var grantToken string
	if cc.rare.grantFile != "" {
		t, err := readGrantFile(cc.rare.grantParam, cc.rare.grantFile)
		if err != nil {
			return Response{}, err
		}
		grantToken = t
		form.Set(cc.rare.grantParam, t)
	}
	switch ep.auth {
	case "client_secret_post":
		form.Set("client_secret", secret)
	case "client_secret_jwt", "private_key_jwt":
		var signer jose.Signer
		var err error
		if cc.rare.key != nil {
			signer, err = cc.rare.key.current()
		} else {
			signer, err = secretSigner(secret)
		}
		if err != nil {
			return Response{}, err
		}
		a, err := signAssertion(signer, cc.clientID, cc.rare.assertionAud, clock())
		if err != nil {
			return Response{}, err
		}
		form.Set("client_assertion_type", ClientAssertionType)
		form.Set("client_assertion", a)
	}

	ctx, cancel := context.WithTimeout(ctx, ep.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.tokenURL, strings.NewReader(joinForm(cc.form, form.Encode())))
	if err != nil {
		return Response{}, errors.New("building request failed") // the URL was checked in NewClientCredentials
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "tokenbroker")
	if ep.basic {
		// RFC 6749 §2.3.1: both halves are form-urlencoded before Basic encoding.
		req.SetBasicAuth(url.QueryEscape(cc.clientID), url.QueryEscape(secret))
	}

	now := clock()
	res, err := ep.hc.Do(req)
	if err != nil {
		// *url.Error quotes the full URL (query included); keep only its cause, as the
		// caller's message names the host.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return Response{}, scrubError(scrubError(err, secret), grantToken)
	}
	defer res.Body.Close()
	telemetry.NoteStatus(ctx, res.StatusCode)
	body, err := io.ReadAll(io.LimitReader(res.Body, maxBody+1))
	if err != nil {
		if ctx.Err() != nil {
			return Response{}, fmt.Errorf("reading response: %w", ctx.Err())
		}
		return Response{}, fmt.Errorf("reading response: %w", scrubError(err, secret))
	}
	if len(body) > maxBody {
		if res.StatusCode >= 200 && res.StatusCode <= 299 {
			return Response{}, fmt.Errorf("%w: body larger than %d bytes", ErrBadResponse, maxBody)
		}
		body = body[:maxBody]
	}

	resp, err := ParseTokenResponse(res.StatusCode, res.Header, body, now, ep.lifetime)
	if err != nil {
		var ie *IdPError
		if errors.As(err, &ie) {
			ie.Code = scrub(scrub(ie.Code, secret), grantToken)
			ie.Description = scrub(scrub(ie.Description, secret), grantToken)
			if ie.Status >= 500 && form.Has("client_assertion") {
				return Response{}, fmt.Errorf("%w; %w", err, errClockSkewHint)
			}
			return Response{}, err
		}
		return Response{}, scrubError(scrubError(err, secret), grantToken)
	}
	return resp, nil
}

// readSecretFile returns a secret file's content without surrounding white space.
func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("client_secret_file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("client_secret_file %s is empty", path)
	}
	return s, nil
}

// readGrantFile reads the subject token or assertion a grant sends, at each
// mint, so a rotated file (e.g. a Kubernetes projected service account
// token) is used without a restart.
func readGrantFile(param, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s file: %w", param, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s file %s is empty", param, path)
	}
	return s, nil
}

// scrub replaces the secret in s. Very short secrets are left alone: replacing them would
// mangle ordinary words while hiding little.
func scrub(s, secret string) string {
	if len(secret) < 4 {
		return s
	}
	return strings.ReplaceAll(s, secret, "[redacted]")
}

// scrubError withholds an error's text if it contains the secret, keeping its chain for errors.Is.
func scrubError(err error, secret string) error {
	if msg := err.Error(); scrub(msg, secret) != msg {
		return &scrubbed{msg: scrub(msg, secret), err: err}
	}
	return err
}

type scrubbed struct {
	msg string
	err error
}

func (s *scrubbed) Error() string { return s.msg }
func (s *scrubbed) Unwrap() error { return s.err }

var defaultClient = sync.OnceValue(func() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSHandshakeTimeout = 10 * time.Second
	t.ResponseHeaderTimeout = time.Minute
	t.MaxIdleConnsPerHost = 4
	return &http.Client{
		Transport: t,
		// A backstop only: each request carries its own, normally shorter, deadline.
		Timeout: 2 * time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
})

// joinForm joins two encoded forms with "&", either possibly empty.
func joinForm(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "&" + b
}
