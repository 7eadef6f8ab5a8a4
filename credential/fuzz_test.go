package credential

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzParseTokenResponse checks that no answer makes ParseTokenResponse panic, return an
// already-expired or never-expiring token, or quote the access token back.
// Seeds live in testdata/fuzz/FuzzParseTokenResponse.
func FuzzParseTokenResponse(f *testing.F) {
	f.Add(200, "", []byte(`{"access_token":"abc","token_type":"Bearer","expires_in":3600}`))
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		for _, def := range []time.Duration{0, -time.Second, time.Nanosecond, 5 * time.Minute, 1 << 62} {
			resp, err := ParseTokenResponse(status, h, body, testNow, def)
			check(t, status, body, resp, err)
		}
	})
}

func check(t *testing.T, status int, body []byte, resp Response, err error) {
	t.Helper()
	// The token as the body states it, for leak checks; short values match by accident.
	var fields map[string]json.RawMessage
	_ = json.Unmarshal(body, &fields)
	token, _ := stringField(fields, "access_token")
	leaks := func(s string) bool { return len(token) >= 8 && strings.Contains(s, token) }

	if err != nil {
		if resp != (Response{}) {
			t.Errorf("non-zero Response %+v with error %v", resp, err)
		}
		var ie *IdPError
		switch {
		case status >= 200 && status <= 299:
			if !errors.Is(err, ErrBadResponse) {
				t.Errorf("2xx error %v does not wrap ErrBadResponse", err)
			}
		case !errors.As(err, &ie):
			t.Errorf("status %d gave %T, want *IdPError", status, err)
		default:
			if ie.Status != status || ie.RetryAfter < 0 || ie.RetryAfter > maxRetryAfter ||
				len(ie.Code) > maxCodeLen || len(ie.Description) > maxDescriptionLen ||
				printable(ie.Code) != ie.Code || readable(ie.Description) != ie.Description || !utf8.ValidString(ie.Description) {
				t.Errorf("bad IdPError %#v for status %d", ie, status)
			}
			return // an IdP's own error text may say anything; it is not a token we accepted
		}
		if leaks(err.Error()) {
			t.Errorf("error %q contains the access token", err)
		}
		return
	}

	if status < 200 || status > 299 {
		t.Fatalf("status %d accepted", status)
	}
	tok := resp.Token
	if tok.Value == "" || tok.Expiry.IsZero() || !tok.Expiry.After(testNow) || !tok.Issued.Equal(testNow) ||
		tok.Lifetime() < time.Second || tok.Lifetime() > MaxLifetime {
		t.Errorf("bad token %+v", tok)
	}
	if !strings.EqualFold(tok.Type, "bearer") {
		t.Errorf("token type %q accepted", tok.Type)
	}
	if strings.ContainsFunc(tok.Value, func(r rune) bool { return r <= ' ' || r > '~' }) {
		t.Errorf("token %q has characters not allowed in a header", tok.Value)
	}
	if leaks(resp.Note) {
		t.Errorf("note %q contains the access token", resp.Note)
	}
}
