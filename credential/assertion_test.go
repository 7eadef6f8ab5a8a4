package credential_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
)

// strictIdP checks client assertions as Ory Hydra does: iat and nbf must not
// be in its future, to the second and without leeway, or it answers 500.
// It records the claims it saw.
func strictIdP(t *testing.T, pub *ecdsa.PublicKey, seen chan<- jwt.Claims) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.PostFormValue("client_assertion_type") != credential.ClientAssertionType {
			oauthError(w, http.StatusInternalServerError, "server_error", "no assertion")
			return
		}
		tok, err := jwt.ParseSigned(r.PostFormValue("client_assertion"), []jose.SignatureAlgorithm{jose.ES256})
		var cl jwt.Claims
		if err != nil || tok.Claims(pub, &cl) != nil {
			oauthError(w, http.StatusUnauthorized, "invalid_client", "bad signature")
			return
		}
		seen <- cl
		now := time.Now().Unix()
		if int64(*cl.IssuedAt) > now || int64(*cl.NotBefore) > now {
			oauthError(w, http.StatusInternalServerError, "server_error", "The authorization server encountered an unexpected condition that prevented it from fulfilling the request.")
			return
		}
		tokenJSON(w, "strict-token", nil)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func ecKeyFile(t *testing.T) (string, *ecdsa.PublicKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	p := filepath.Join(t.TempDir(), "key.pem")
	writeAt(t, p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), time.Now())
	return p, &key.PublicKey
}

// TestAssertionToleratesClockSkew: with this host's clock up to a few
// seconds ahead of a strict IdP's, private_key_jwt still mints, because iat
// and nbf are back-dated; exp stays short. Far ahead, the IdP's 500 comes
// back with a note that clock skew is a possible cause.
func TestAssertionToleratesClockSkew(t *testing.T) {
	keyFile, pub := ecKeyFile(t)
	seen := make(chan jwt.Claims, 1)
	srv := strictIdP(t, pub, seen)
	for _, tc := range []struct {
		ahead time.Duration
		ok    bool
	}{
		{0, true},
		{time.Second, true}, // failed every mint before back-dating
		{8 * time.Second, true},
		{30 * time.Second, false},
	} {
		cc, err := credential.NewClientCredentials(&config.Credential{Name: "pkj", TokenURL: srv.URL + "/oauth2/token", ClientID: "svc",
			AuthMethod: "private_key_jwt", PrivateKeyFile: keyFile}, nil)
		if err != nil {
			t.Fatal(err)
		}
		cc.Now = func() time.Time { return time.Now().Add(tc.ahead) }
		before := time.Now()
		_, err = cc.Token(context.Background())
		cl := <-seen
		if tc.ok != (err == nil) {
			t.Fatalf("clock %s ahead: err %v, want ok=%v", tc.ahead, err, tc.ok)
		}
		// exp is AssertionLifetime after the signer's now, not after iat.
		if got := cl.Expiry.Time().Sub(cl.IssuedAt.Time()); got != credential.AssertionLifetime+credential.AssertionBackdate {
			t.Errorf("exp - iat = %s, want %s", got, credential.AssertionLifetime+credential.AssertionBackdate)
		}
		if exp := cl.Expiry.Time(); exp.After(before.Add(tc.ahead + credential.AssertionLifetime + time.Second)) {
			t.Errorf("exp %s is later than now + %s", exp, credential.AssertionLifetime)
		}
		if !tc.ok {
			var ie *credential.IdPError
			if !errors.As(err, &ie) || ie.Status != 500 {
				t.Fatalf("want the IdP's 500 as an *IdPError, got %v", err)
			}
			if !strings.Contains(err.Error(), "clock skew is a possible cause") {
				t.Fatalf("a 5xx to an assertion does not mention clock skew: %v", err)
			}
		}
	}
}

// TestNoClockSkewHintWithoutAssertion: a 5xx to a client secret says
// nothing about clocks.
func TestNoClockSkewHintWithoutAssertion(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		oauthError(w, http.StatusInternalServerError, "server_error", "down")
	}))
	defer srv.Close()
	cc, err := credential.NewClientCredentials(&config.Credential{Name: "b", TokenURL: srv.URL, ClientID: "svc", ClientSecret: "s",
		AuthMethod: "client_secret_basic"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cc.Token(context.Background()); err == nil || strings.Contains(err.Error(), "clock") {
		t.Fatalf("got %v, want a 500 without a clock note", err)
	}
}

// TestAssertionAudienceHintSurvives: Hydra refuses an assertion with the
// wrong aud in a long error_description whose useful part (the aud it
// expects) comes after a generic sentence; the mint error keeps it, over
// real HTTP, with control characters stripped.
func TestAssertionAudienceHintSurvives(t *testing.T) {
	keyFile, _ := ecKeyFile(t)
	const hint = "The JSON Web Token uses claim 'aud' with 'https://wrong.example/token' but expected 'https://idp.example/oauth2/token'."
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "Client authentication failed (e.g., unknown client, no client authentication included, or unsupported authentication method). "+
			"The request could not be authorized because the client assertion was not valid.\r\n\x1b[2K"+hint)
	}))
	defer srv.Close()
	cc, err := credential.NewClientCredentials(&config.Credential{Name: "pkj", TokenURL: srv.URL, ClientID: "svc",
		AuthMethod: "private_key_jwt", PrivateKeyFile: keyFile, AssertionAudience: "https://wrong.example/token"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cc.Token(context.Background())
	if err == nil || !strings.Contains(err.Error(), hint) {
		t.Fatalf("the IdP's hint was lost: %v", err)
	}
	if strings.ContainsAny(err.Error(), "\r\n\x1b") || strings.Contains(err.Error(), "clock skew") {
		t.Fatalf("control characters or a wrong note in: %q", err)
	}
}
