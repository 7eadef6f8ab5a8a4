package credential

import (
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

	"github.com/tokenbroker/tokenbroker/config"
)

const (
	// DefaultTimeout bounds one token request when the configuration does not.
	DefaultTimeout = 10 * time.Second
	// maxBody is the most of a token response that is read.
	maxBody = 1 << 20
)

// ClientCredentials mints tokens with the OAuth 2.0 client credentials grant (RFC 6749 §4.4).
// It is safe for concurrent use once built; set its exported fields before the first Token call.
type ClientCredentials struct {
	// Now stamps Issued and Expiry; nil means time.Now. The stamp is taken just before the
	// request is sent, so a slow IdP shortens the token's believed life rather than lengthening it.
	Now func() time.Time
	// Logf, when set, receives one line for every adjustment made to an IdP's answer (see
	// Response.Note). It never receives a token or secret.
	Logf func(format string, args ...any)

	name       string
	tokenURL   string
	host       string // for messages: no userinfo, no query
	clientID   string
	secret     string // from client_secret; "" when secretFile is used
	secretFile string // read at each mint, so a rotated file is picked up
	basic      bool   // client_secret_basic rather than client_secret_post
	form       url.Values
	timeout    time.Duration
	lifetime   time.Duration // when the IdP omits expires_in
	hc         *http.Client
}

// NewClientCredentials checks c and builds a Source for it. hc nil means a shared client with
// connection, TLS-handshake and overall timeouts that does not follow redirects (a redirect
// is reported as an *IdPError rather than replaying credentials to another URL).
func NewClientCredentials(c *config.Credential, hc *http.Client) (*ClientCredentials, error) {
	if c == nil {
		return nil, errors.New("credential: nil configuration")
	}
	fail := func(format string, args ...any) (*ClientCredentials, error) {
		return nil, fmt.Errorf("credential %q: %s", c.Name, fmt.Sprintf(format, args...))
	}
	if c.Type != "" && c.Type != "client_credentials" {
		return fail("type %q is not client_credentials", c.Type)
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
	if c.ClientID == "" {
		return fail("client_id is required")
	}
	secret := c.ClientSecret.Reveal()
	if secret == "" && c.ClientSecretFile == "" {
		return fail("client_secret or client_secret_file is required")
	}
	if secret == "" {
		if _, err := readSecretFile(c.ClientSecretFile); err != nil {
			return fail("%v", err)
		}
	}

	var basic bool
	switch c.AuthMethod {
	case "", "client_secret_basic":
		basic = true
	case "client_secret_post":
	default:
		return fail("auth_method %q is not client_secret_basic or client_secret_post", c.AuthMethod)
	}

	form := url.Values{"grant_type": {"client_credentials"}}
	if len(c.Scopes) > 0 {
		form.Set("scope", strings.Join(c.Scopes, " "))
	}
	if c.Audience != "" {
		form.Set("audience", c.Audience)
	}
	if !basic {
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
		case form.Has(k):
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
	if hc == nil {
		hc = defaultClient()
	}
	return &ClientCredentials{
		name:       c.Name,
		tokenURL:   u.String(),
		host:       u.Host,
		clientID:   c.ClientID,
		secret:     secret,
		secretFile: c.ClientSecretFile,
		basic:      basic,
		form:       form,
		timeout:    timeout,
		lifetime:   lifetime,
		hc:         hc,
	}, nil
}

// Token requests a new token from the IdP. Errors name the token endpoint's host; an IdP's
// refusal is an *IdPError, an unusable 2xx answer wraps ErrBadResponse, and a deadline or
// cancellation still satisfies errors.Is(err, context.DeadlineExceeded / context.Canceled).
func (cc *ClientCredentials) Token(ctx context.Context) (Token, error) {
	resp, err := cc.mint(ctx)
	if err != nil {
		return Token{}, fmt.Errorf("token request to %s: %w", cc.host, err)
	}
	if resp.Note != "" && cc.Logf != nil {
		cc.Logf("credential %q: token response from %s adjusted: %s", cc.name, cc.host, resp.Note)
	}
	return resp.Token, nil
}

func (cc *ClientCredentials) mint(ctx context.Context) (Response, error) {
	secret := cc.secret
	if secret == "" {
		s, err := readSecretFile(cc.secretFile)
		if err != nil {
			return Response{}, err
		}
		secret = s
	}

	form := cc.form
	if !cc.basic {
		form = make(url.Values, len(cc.form)+1)
		for k, v := range cc.form {
			form[k] = v
		}
		form.Set("client_secret", secret)
	}

	ctx, cancel := context.WithTimeout(ctx, cc.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cc.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return Response{}, errors.New("building request failed") // the URL was checked in NewClientCredentials
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "tokenbroker")
	if cc.basic {
		// RFC 6749 §2.3.1: both halves are form-urlencoded before Basic encoding.
		req.SetBasicAuth(url.QueryEscape(cc.clientID), url.QueryEscape(secret))
	}

	now := cc.now()
	res, err := cc.hc.Do(req)
	if err != nil {
		// *url.Error quotes the full URL (query included); keep only its cause, as the
		// caller's message names the host.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return Response{}, scrubError(err, secret)
	}
	defer res.Body.Close()
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

	resp, err := ParseTokenResponse(res.StatusCode, res.Header, body, now, cc.lifetime)
	if err != nil {
		var ie *IdPError
		if errors.As(err, &ie) {
			ie.Code = scrub(ie.Code, secret)
			ie.Description = scrub(ie.Description, secret)
			return Response{}, err
		}
		return Response{}, scrubError(err, secret)
	}
	return resp, nil
}

func (cc *ClientCredentials) now() time.Time {
	if cc.Now != nil {
		return cc.Now()
	}
	return time.Now()
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
