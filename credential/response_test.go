package credential

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// tokenValue is the access token used in test bodies; no error or note may contain it.
const tokenValue = "tok-3f9a8b7c6d5e4f3a2b1c"

var testNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func TestParseTokenResponse(t *testing.T) {
	longDesc := strings.Repeat("x", 250)
	tests := []struct {
		name       string
		status     int
		retryAfter string
		body       string
		def        time.Duration // default lifetime passed in

		wantLifetime time.Duration
		wantType     string
		wantScope    string
		wantNote     string // substring; "" means no note
		wantBad      string // substring of an ErrBadResponse error
		wantIdP      *IdPError
		check        func(*testing.T, *IdPError) // for an IdPError too long to spell out
	}{
		{
			name:         "good",
			status:       200,
			body:         `{"access_token":"` + tokenValue + `","token_type":"Bearer","expires_in":3600,"scope":"read write"}`,
			wantLifetime: time.Hour, wantType: "Bearer", wantScope: "read write",
		},
		{
			name:         "201 with BOM and whitespace",
			status:       201,
			body:         "\ufeff \n" + `{"access_token":"` + tokenValue + `","token_type":"Bearer","expires_in":60}` + "\n",
			wantLifetime: time.Minute, wantType: "Bearer",
		},
		{
			name:         "numeric string expires_in",
			status:       200,
			body:         `{"access_token":"` + tokenValue + `","token_type":"Bearer","expires_in":"3600"}`,
			wantLifetime: time.Hour, wantType: "Bearer",
		},
		{
			name:         "fractional expires_in truncated",
			status:       200,
			body:         `{"access_token":"` + tokenValue + `","token_type":"Bearer","expires_in":59.9}`,
			wantLifetime: 59 * time.Second, wantType: "Bearer",
		},
		{
			name:         "missing expires_in",
			status:       200,
			body:         `{"access_token":"` + tokenValue + `","token_type":"Bearer"}`,
			def:          7 * time.Minute,
			wantLifetime: 7 * time.Minute, wantType: "Bearer", wantNote: "expires_in missing; assumed 7m0s",
		},
		{
			name:         "null expires_in and no default given",
			status:       200,
			body:         `{"access_token":"` + tokenValue + `","token_type":"Bearer","expires_in":null}`,
			wantLifetime: DefaultLifetime, wantType: "Bearer", wantNote: "expires_in missing; assumed 5m0s",
		},
		{
			name:         "zero expires_in",
			status:       200,
			body:         `{"access_token":"` + tokenValue + `","token_type":"Bearer","expires_in":0}`,
			def:          2 * time.Minute,
			wantLifetime: 2 * time.Minute, wantType: "Bearer", wantNote: `expires_in "0" out of range; assumed 2m0s`,
		},
		{
			name:         "negative expires_in",
			status:       200,
			body:         `{"access_token":"` + tokenValue + `","token_type":"Bearer","expires_in":"-30"}`,
			def:          2 * time.Minute,
			wantLifetime: 2 * time.Minute, wantType: "Bearer", wantNote: "out of range; assumed 2m0s",
		},
		{
			name:         "huge expires_in",
			status:       200,
			body:         `{"access_token":"` + tokenValue + `","token_type":"Bearer","expires_in":1e300}`,
			wantLifetime: MaxLifetime, wantType: "Bearer", wantNote: "clamped to 8760h0m0s",
		},
		{
			name:         "overflowing expires_in",
			status:       200,
			body:         `{"access_token":"` + tokenValue + `","token_type":"Bearer","expires_in":1e999}`,
			wantLifetime: MaxLifetime, wantType: "Bearer", wantNote: "clamped",
		},
		{
			name:    "non-numeric expires_in",
			status:  200,
			body:    `{"access_token":"` + tokenValue + `","token_type":"Bearer","expires_in":"soon"}`,
			wantBad: `expires_in "soon" is not a number`,
		},
		{
			name:    "Infinity expires_in",
			status:  200,
			body:    `{"access_token":"` + tokenValue + `","token_type":"Bearer","expires_in":"Infinity"}`,
			wantBad: "is not a number",
		},
		{
			name:    "boolean expires_in",
			status:  200,
			body:    `{"access_token":"` + tokenValue + `","token_type":"Bearer","expires_in":true}`,
			wantBad: "expires_in is neither a number nor a string",
		},
		{
			name:    "expires_in quoting the token is withheld",
			status:  200,
			body:    `{"access_token":"` + tokenValue + `","token_type":"Bearer","expires_in":"x` + tokenValue + `"}`,
			wantBad: "expires_in [withheld] is not a number",
		},
		{
			name:         "token_type BEARER",
			status:       200,
			body:         `{"access_token":"` + tokenValue + `","token_type":"BEARER","expires_in":60}`,
			wantLifetime: time.Minute, wantType: "BEARER",
		},
		{
			name:         "token_type bearer",
			status:       200,
			body:         `{"access_token":"` + tokenValue + `","token_type":"bearer","expires_in":60}`,
			wantLifetime: time.Minute, wantType: "bearer",
		},
		{
			name:         "token_type missing",
			status:       200,
			body:         `{"access_token":"` + tokenValue + `","expires_in":60}`,
			wantLifetime: time.Minute, wantType: "Bearer", wantNote: "token_type missing; assumed Bearer",
		},
		{
			name:         "token_type and expires_in missing",
			status:       200,
			body:         `{"access_token":"` + tokenValue + `"}`,
			wantLifetime: DefaultLifetime, wantType: "Bearer",
			wantNote: "token_type missing; assumed Bearer; expires_in missing; assumed 5m0s",
		},
		{
			name:    "token_type mac",
			status:  200,
			body:    `{"access_token":"` + tokenValue + `","token_type":"mac","expires_in":60}`,
			wantBad: `unsupported token_type "mac"`,
		},
		{
			name:    "token_type DPoP",
			status:  200,
			body:    `{"access_token":"` + tokenValue + `","token_type":"DPoP","expires_in":60}`,
			wantBad: `unsupported token_type "DPoP"`,
		},
		{
			name:    "token_type not a string",
			status:  200,
			body:    `{"access_token":"` + tokenValue + `","token_type":1}`,
			wantBad: "token_type is not a string",
		},
		{
			name:    "empty 200",
			status:  200,
			wantBad: "empty body (body 0 bytes)",
		},
		{
			name:    "garbage 200",
			status:  200,
			body:    "<html>" + tokenValue + "</html>",
			wantBad: "body is not a JSON object (body 37 bytes)",
		},
		{
			name:    "truncated JSON",
			status:  200,
			body:    `{"access_token":"` + tokenValue,
			wantBad: "body is not valid JSON",
		},
		{
			name:    "JSON array",
			status:  200,
			body:    `["` + tokenValue + `"]`,
			wantBad: "body is not a JSON object",
		},
		{
			name:    "JSON null",
			status:  200,
			body:    `null`,
			wantBad: "body is not a JSON object",
		},
		{
			name:    "access_token missing",
			status:  200,
			body:    `{"token_type":"Bearer","expires_in":60}`,
			wantBad: "no access_token",
		},
		{
			name:    "error object with 200",
			status:  200,
			body:    `{"error":"invalid_scope","error_description":"nope"}`,
			wantBad: `no access_token; error "invalid_scope"`,
		},
		{
			name:    "access_token empty",
			status:  200,
			body:    `{"access_token":"","token_type":"Bearer"}`,
			wantBad: "access_token is empty",
		},
		{
			name:    "access_token not a string",
			status:  200,
			body:    `{"access_token":12345,"token_type":"Bearer"}`,
			wantBad: "access_token is not a string",
		},
		{
			name:    "access_token with a newline",
			status:  200,
			body:    `{"access_token":"abc\r\nX-Evil: 1","token_type":"Bearer"}`,
			wantBad: "not allowed in an HTTP header at offset 3",
		},
		{
			name:    "400 invalid_client",
			status:  400,
			body:    `{"error":"invalid_client","error_description":"Client authentication failed"}`,
			wantIdP: &IdPError{Status: 400, Code: "invalid_client", Description: "Client authentication failed"},
		},
		{
			name:    "401 description sanitised and truncated",
			status:  401,
			body:    `{"error":"invalid_client\u0007","error_description":"bad\n\u00e9` + longDesc + `"}`,
			wantIdP: &IdPError{Status: 401, Code: "invalid_client", Description: ("bad \u00e9" + longDesc)},
		},
		{
			// Hydra's shape: a generic sentence, then the hint that matters.
			name:   "long description keeps its hint, control characters stripped",
			status: 400,
			body: `{"error":"invalid_client","error_description":"Client authentication failed (e.g., unknown client, no client authentication included, or unsupported authentication method). ` +
				strings.Repeat("The request could not be authorized. ", 8) + `\u001b[31mforged\u001b[0m\r\n{\"level\":\"info\"} \u202eevil The JSON Web Token uses claim 'aud' with 'https://idp/wrong' but expected 'https://idp/oauth2/token'.` +
				strings.Repeat("y", 1200) + `"}`,
			check: func(t *testing.T, e *IdPError) {
				for _, want := range []string{"but expected 'https://idp/oauth2/token'", "[31mforged[0m {\"level\":\"info\"} evil The JSON"} {
					if !strings.Contains(e.Description, want) {
						t.Errorf("description lost %q:\n%s", want, e.Description)
					}
				}
				if len(e.Description) != maxDescriptionLen {
					t.Errorf("description is %d bytes, want it cut at %d", len(e.Description), maxDescriptionLen)
				}
				if strings.ContainsAny(e.Description, "\x1b\r\n\u202e") {
					t.Errorf("description keeps a control or format character: %q", e.Description)
				}
			},
		},
		{
			name:    "description cut on a character boundary",
			status:  400,
			body:    `{"error":"invalid_request","error_description":"` + strings.Repeat("x", maxDescriptionLen-1) + `\u00e9"}`,
			wantIdP: &IdPError{Status: 400, Code: "invalid_request", Description: strings.Repeat("x", maxDescriptionLen-1)},
		},
		{
			name:       "429 Retry-After seconds",
			status:     429,
			retryAfter: "30",
			body:       `{"error":"rate_limited"}`,
			wantIdP:    &IdPError{Status: 429, Code: "rate_limited", RetryAfter: 30 * time.Second},
		},
		{
			name:       "429 Retry-After date",
			status:     429,
			retryAfter: testNow.Add(2 * time.Minute).Format(http.TimeFormat),
			wantIdP:    &IdPError{Status: 429, RetryAfter: 2 * time.Minute},
		},
		{
			name:       "503 Retry-After date in the past",
			status:     503,
			retryAfter: testNow.Add(-time.Minute).Format(http.TimeFormat),
			wantIdP:    &IdPError{Status: 503},
		},
		{
			name:       "503 Retry-After huge",
			status:     503,
			retryAfter: "99999999999999999999999",
			wantIdP:    &IdPError{Status: 503, RetryAfter: maxRetryAfter},
		},
		{
			name:       "400 Retry-After garbage",
			status:     400,
			retryAfter: "-5",
			wantIdP:    &IdPError{Status: 400},
		},
		{
			name:    "500 with HTML body",
			status:  500,
			body:    "<html><body><h1>Internal Server Error</h1></body></html>",
			wantIdP: &IdPError{Status: 500},
		},
		{
			name:    "302 redirect",
			status:  302,
			wantIdP: &IdPError{Status: 302},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.retryAfter != "" {
				h.Set("Retry-After", tt.retryAfter)
			}
			resp, err := ParseTokenResponse(tt.status, h, []byte(tt.body), testNow, tt.def)
			if err != nil && strings.Contains(err.Error(), tokenValue) {
				t.Errorf("error contains the access token: %v", err)
			}
			if strings.Contains(resp.Note, tokenValue) {
				t.Errorf("note contains the access token: %q", resp.Note)
			}
			switch {
			case tt.check != nil:
				var ie *IdPError
				if !errors.As(err, &ie) {
					t.Fatalf("got %v, want *IdPError", err)
				}
				tt.check(t, ie)
			case tt.wantIdP != nil:
				var ie *IdPError
				if !errors.As(err, &ie) {
					t.Fatalf("got %v, want *IdPError", err)
				}
				if *ie != *tt.wantIdP {
					t.Errorf("got %#v\nwant %#v", *ie, *tt.wantIdP)
				}
			case tt.wantBad != "":
				if !errors.Is(err, ErrBadResponse) {
					t.Fatalf("got %v, want ErrBadResponse", err)
				}
				if !strings.Contains(err.Error(), tt.wantBad) {
					t.Errorf("error %q does not contain %q", err, tt.wantBad)
				}
			default:
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				tok := resp.Token
				if tok.Value != tokenValue || tok.Type != tt.wantType || !tok.Issued.Equal(testNow) ||
					tok.Lifetime() != tt.wantLifetime || resp.Scope != tt.wantScope {
					t.Errorf("got %+v scope %q; want type %q lifetime %s scope %q",
						tok, resp.Scope, tt.wantType, tt.wantLifetime, tt.wantScope)
				}
				if tt.wantNote == "" && resp.Note != "" || !strings.Contains(resp.Note, tt.wantNote) {
					t.Errorf("note %q, want %q", resp.Note, tt.wantNote)
				}
			}
		})
	}
}

func TestIdPError(t *testing.T) {
	tests := []struct {
		err       IdPError
		text      string
		temporary bool
	}{
		{IdPError{Status: 401, Code: "invalid_client", Description: "Client authentication failed"},
			"token endpoint returned 401: invalid_client: Client authentication failed", false},
		{IdPError{Status: 400, Code: "invalid_scope"}, "token endpoint returned 400: invalid_scope", false},
		{IdPError{Status: 403}, "token endpoint returned 403", false},
		{IdPError{Status: 408}, "token endpoint returned 408", true},
		{IdPError{Status: 429, RetryAfter: 30 * time.Second}, "token endpoint returned 429 (retry after 30s)", true},
		{IdPError{Status: 500}, "token endpoint returned 500", true},
		{IdPError{Status: 503, Code: "temporarily_unavailable"}, "token endpoint returned 503: temporarily_unavailable", true},
		{IdPError{Status: 302}, "token endpoint returned 302", false},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.text {
			t.Errorf("Error() = %q, want %q", got, tt.text)
		}
		if got := tt.err.Temporary(); got != tt.temporary {
			t.Errorf("%d: Temporary() = %v, want %v", tt.err.Status, got, tt.temporary)
		}
	}
}
