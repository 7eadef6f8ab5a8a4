package credential

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/tokenbroker/tokenbroker/config"
)

// A source from Hooks.FromConfig stamps with the hooks' Now, tells their
// Logf of an adjusted answer (with its name, without the token or secret)
// and fills the header from its format, with no wrapper around it.
func TestHooksFromConfigUsesHooks(t *testing.T) {
	idp, srv, _ := newIdP(t)
	idp.SetDown(200, `{"access_token":"`+tokenValue+`"}`, "")
	var logged, names []string
	h := &Hooks{
		Now: func() time.Time { return testNow },
		Logf: func(name, format string, args ...any) {
			names, logged = append(names, name), append(logged, fmt.Sprintf(format, args...))
		},
	}
	src, err := h.FromConfig(credentialFor(srv.URL+"/oauth/token", func(c *config.Credential) {
		c.Format, c.DefaultLifetime = "Bearer {token}", config.Duration(3*time.Minute)
	}))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := src.(*client); !ok {
		t.Fatalf("source is a %T, want a *client (no wrapper, no fields for the hooks)", src)
	}
	tok, err := src.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !tok.Issued.Equal(testNow) || tok.Lifetime() != 3*time.Minute {
		t.Errorf("issued %v for %v: the hooks' clock was not used", tok.Issued, tok.Lifetime())
	}
	if tok.Header != "Bearer "+tokenValue || tok.Value != tokenValue {
		t.Errorf("header %q, value %q", tok.Header, tok.Value)
	}
	want := `credential "test": token response from ` + strings.TrimPrefix(srv.URL, "http://") +
		" adjusted: token_type missing; assumed Bearer; expires_in missing; assumed 3m0s"
	if len(logged) != 1 || logged[0] != want || names[0] != "test" {
		t.Errorf("logged %q for %q\nwant %q for \"test\"", logged, names, want)
	}
	for _, l := range logged {
		if strings.Contains(l, tokenValue) || strings.Contains(l, testSecret) {
			t.Errorf("a note carries the token or the secret: %q", l)
		}
	}
}

// A nil *Hooks is none: time.Now and no notes.
func TestNilHooksFromConfig(t *testing.T) {
	idp, srv, _ := newIdP(t)
	idp.SetDown(200, `{"access_token":"`+tokenValue+`"}`, "")
	src, err := (*Hooks)(nil).FromConfig(credentialFor(srv.URL + "/oauth/token"))
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	tok, err := src.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tok.Issued.Before(before) || tok.Issued.After(time.Now()) {
		t.Errorf("issued %v, not now", tok.Issued)
	}
	if tok.Header != "" {
		t.Errorf("header %q without a format", tok.Header)
	}
}

// FromConfig with a logf still returns a *ClientCredentials, whose Now and
// Logf a caller may set and which are used; its header is filled from the
// format too.
func TestFromConfigLogfIsClientCredentials(t *testing.T) {
	idp, srv, _ := newIdP(t)
	idp.SetDown(200, `{"access_token":"`+tokenValue+`"}`, "")
	var first, second int
	src, err := FromConfig(credentialFor(srv.URL+"/oauth/token", func(c *config.Credential) { c.Format = "Token {token}!" }),
		func(string, string, ...any) { first++ })
	if err != nil {
		t.Fatal(err)
	}
	cc, ok := src.(*ClientCredentials)
	if !ok {
		t.Fatalf("source is a %T, want a *ClientCredentials", src)
	}
	later := testNow.Add(time.Hour)
	cc.Now = func() time.Time { return later }
	tok, err := cc.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cc.Logf = func(string, string, ...any) { second++ }
	if _, err := cc.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !tok.Issued.Equal(later) || tok.Header != "Token "+tokenValue+"!" || tok.Value != tokenValue {
		t.Errorf("token %+v: the caller's clock or the format not used", tok)
	}
	if first != 1 || second != 1 {
		t.Errorf("notes: %d to FromConfig's logf, %d to the Logf set later; want 1 each", first, second)
	}
}

// A ClientCredentials' own Now and Logf win over the hooks of its endpoint.
func TestClientCredentialsFieldsWinOverHooks(t *testing.T) {
	idp, srv, _ := newIdP(t)
	idp.SetDown(200, `{"access_token":"`+tokenValue+`"}`, "")
	var fromHooks, own int
	h := &Hooks{Now: func() time.Time { return testNow }, Logf: func(string, string, ...any) { fromHooks++ }}
	cl, err := newClient(credentialFor(srv.URL+"/oauth/token"), nil, endpoint{hooks: h})
	if err != nil {
		t.Fatal(err)
	}
	cc := &ClientCredentials{client: cl}
	tok, err := cc.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !tok.Issued.Equal(testNow) || fromHooks != 1 {
		t.Errorf("unset fields: issued %v, %d notes to the hooks", tok.Issued, fromHooks)
	}
	later := testNow.Add(time.Hour)
	cc.Now, cc.Logf = func() time.Time { return later }, func(string, string, ...any) { own++ }
	if tok, err = cc.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !tok.Issued.Equal(later) || own != 1 || fromHooks != 1 {
		t.Errorf("set fields: issued %v, %d notes to Logf, %d to the hooks", tok.Issued, own, fromHooks)
	}
}

// 100,000 sources from one configuration share one endpoint (its hooks and
// format included) and each is 80 bytes: no function fields, no wrapper.
func TestHooksFromConfigShared(t *testing.T) {
	h := &Hooks{Logf: func(string, string, ...any) {}}
	a, err := h.FromConfig(credentialFor("https://idp.example.com/token", func(c *config.Credential) { c.Format = "Bearer {token}" }))
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.FromConfig(credentialFor("https://idp.example.com/token", func(c *config.Credential) {
		c.Name, c.ClientID, c.ClientSecret, c.Format = "other", "other", "other-secret", "Bearer {token}"
	}))
	if err != nil {
		t.Fatal(err)
	}
	if a.(*client).ep != b.(*client).ep {
		t.Error("two sources of one IdP, format and hooks do not share their endpoint")
	}
	if n := unsafe.Sizeof(client{}); n > 80 {
		t.Errorf("a source is %d bytes, want at most 80", n)
	}
}
