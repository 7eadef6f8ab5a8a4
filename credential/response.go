package credential

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// ErrBadResponse is wrapped by every error about a 2xx token response that cannot be used:
// empty or non-JSON body, no access_token, an unsupported token_type, a malformed expires_in.
var ErrBadResponse = errors.New("unusable token response")

const (
	// MaxLifetime caps expires_in: a longer claim is clamped to it.
	MaxLifetime = 365 * 24 * time.Hour
	// DefaultLifetime is assumed when neither the IdP nor the configuration says how long a
	// token lives.
	DefaultLifetime = 5 * time.Minute
	// maxRetryAfter caps a Retry-After hint so a confused IdP cannot park a credential for days.
	maxRetryAfter = 24 * time.Hour

	maxCodeLen = 64
	// maxDescriptionLen bounds error_description as kept in errors and logs.
	// IdPs put their useful hint after a generic sentence (Hydra names the
	// audience it refused, or the token URL it expects as aud, at about
	// character 250), so 200 lost it; a kilobyte keeps it while a hostile
	// or broken IdP still cannot fill the logs.
	maxDescriptionLen = 1024
	maxQuotedLen      = 32 // longest field value quoted in an error or note
)

// Response is a successful token response after validation.
type Response struct {
	Token Token
	// Scope is the scope the IdP says it granted ("" when it did not say).
	Scope string
	// Note describes any adjustment made to what the IdP sent (a missing token_type or
	// expires_in, a clamped lifetime), for the caller to log; "" when none was needed.
	// It never contains the token.
	Note string
}

// IdPError is a non-2xx answer from a token endpoint.
type IdPError struct {
	Status int
	// Code and Description are RFC 6749 §5.2 "error" and "error_description" when the body
	// carried them. Code is reduced to printable ASCII; Description keeps printable text
	// (line breaks become spaces; control and format characters are dropped) up to 1 KiB.
	Code, Description string
	// RetryAfter is the Retry-After header as a duration from receipt (0 when absent or invalid).
	RetryAfter time.Duration
}

// Error reads like "token endpoint returned 401: invalid_client: Client authentication failed".
func (e *IdPError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "token endpoint returned %d", e.Status)
	if e.Code != "" {
		b.WriteString(": ")
		b.WriteString(e.Code)
	}
	if e.Description != "" {
		b.WriteString(": ")
		b.WriteString(e.Description)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	return b.String()
}

// Temporary reports whether trying again later may succeed: true for 5xx, 429 and 408,
// false for everything else (400, 401 and 403 need a configuration change).
func (e *IdPError) Temporary() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout
}

// ParseTokenResponse turns a token endpoint's answer into a Token stamped with now, or an error.
//
// A 2xx answer must be a JSON object with a non-empty access_token; token_type must be Bearer
// (any case) or absent. expires_in may be a number or a numeric string; when it is absent,
// null or under a second the token is given defaultLifetime (DefaultLifetime if that is
// under a second too), and a claim longer than MaxLifetime is clamped; Response.Note says so.
// Any other status gives an *IdPError. Neither errors nor notes ever quote the body's token.
func ParseTokenResponse(status int, h http.Header, body []byte, now time.Time, defaultLifetime time.Duration) (Response, error) {
	if status < 200 || status > 299 {
		return Response{}, parseIdPError(status, h, body, now)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s (body %d bytes)", ErrBadResponse, fmt.Sprintf(format, args...), len(body))
	}

	trimmed := bytes.TrimSpace(bytes.TrimPrefix(body, []byte("\xef\xbb\xbf")))
	if len(trimmed) == 0 {
		return Response{}, bad("empty body")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &fields); err != nil || fields == nil {
		if trimmed[0] != '{' {
			return Response{}, bad("body is not a JSON object")
		}
		return Response{}, bad("body is not valid JSON")
	}

	var value string
	if raw, ok := fields["access_token"]; !ok || isNull(raw) {
		if code, ok := stringField(fields, "error"); ok && code != "" {
			return Response{}, bad("no access_token; error %s", quote(code, ""))
		}
		return Response{}, bad("no access_token")
	} else if json.Unmarshal(raw, &value) != nil {
		return Response{}, bad("access_token is not a string")
	}
	if value == "" {
		return Response{}, bad("access_token is empty")
	}
	if i := strings.IndexFunc(value, func(r rune) bool { return r <= ' ' || r > '~' }); i >= 0 {
		return Response{}, bad("access_token has a character not allowed in an HTTP header at offset %d", i)
	}

	var notes []string
	tokenType, ok := stringField(fields, "token_type")
	switch {
	case !ok:
		if raw, present := fields["token_type"]; present && !isNull(raw) {
			return Response{}, bad("token_type is not a string")
		}
		tokenType = "Bearer"
		notes = append(notes, "token_type missing; assumed Bearer")
	case tokenType == "":
		tokenType = "Bearer"
		notes = append(notes, "token_type empty; assumed Bearer")
	case tokenType == "N_A":
		// RFC 8693 §2.2.1: a token exchange answers N_A when the issued token
		// is not an OAuth access token; it is still presented as a bearer.
		tokenType = "Bearer"
		notes = append(notes, "token_type N_A (token exchange); presented as Bearer")
	case !strings.EqualFold(tokenType, "bearer"):
		return Response{}, bad("unsupported token_type %s (only Bearer is supported)", quote(tokenType, value))
	}

	if defaultLifetime < time.Second {
		defaultLifetime = DefaultLifetime
	}
	defaultLifetime = min(defaultLifetime, MaxLifetime)
	lifetime, note, err := parseExpiresIn(fields["expires_in"], value, defaultLifetime)
	if err != nil {
		return Response{}, bad("%s", err)
	}
	if note != "" {
		notes = append(notes, note)
	}

	scope, _ := stringField(fields, "scope")
	return Response{
		Token: Token{
			Value:  value,
			Type:   tokenType,
			Expiry: now.Add(lifetime),
			Issued: now,
		},
		Scope: scope,
		Note:  strings.Join(notes, "; "),
	}, nil
}

// parseExpiresIn reads expires_in (a JSON number, a numeric string, null or absent) as a
// lifetime of at least one second and at most MaxLifetime.
func parseExpiresIn(raw json.RawMessage, token string, def time.Duration) (time.Duration, string, error) {
	if raw == nil || isNull(raw) {
		return def, fmt.Sprintf("expires_in missing; assumed %s", def), nil
	}
	var text string
	switch raw[0] {
	case '"':
		if err := json.Unmarshal(raw, &text); err != nil {
			return 0, "", errors.New("expires_in is not a valid JSON string")
		}
		text = strings.TrimSpace(text)
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		text = string(raw)
	default:
		return 0, "", errors.New("expires_in is neither a number nor a string")
	}
	// Accept exactly JSON's number grammar (no "Inf", "NaN", hex or "+"); ParseFloat then
	// only fails by overflow, which the clamp below handles.
	secs, err := strconv.ParseFloat(text, 64)
	if text == "" || (text[0] != '-' && (text[0] < '0' || text[0] > '9')) || !json.Valid([]byte(text)) ||
		err != nil && !errors.Is(err, strconv.ErrRange) || math.IsNaN(secs) {
		return 0, "", fmt.Errorf("expires_in %s is not a number", quote(text, token))
	}
	shown := quote(text, token)
	switch {
	case secs < 1:
		return def, fmt.Sprintf("expires_in %s out of range; assumed %s", shown, def), nil
	case secs > MaxLifetime.Seconds():
		return MaxLifetime, fmt.Sprintf("expires_in %s out of range; clamped to %s", shown, MaxLifetime), nil
	}
	return time.Duration(secs) * time.Second, "", nil
}

// parseIdPError builds the *IdPError for a non-2xx answer.
func parseIdPError(status int, h http.Header, body []byte, now time.Time) *IdPError {
	e := &IdPError{Status: status, RetryAfter: parseRetryAfter(h.Get("Retry-After"), now)}
	var fields map[string]json.RawMessage
	if json.Unmarshal(bytes.TrimSpace(body), &fields) != nil {
		return e
	}
	if code, ok := stringField(fields, "error"); ok {
		e.Code = truncate(printable(code), maxCodeLen)
	}
	if desc, ok := stringField(fields, "error_description"); ok {
		e.Description = strings.TrimSpace(truncateUTF8(readable(desc), maxDescriptionLen))
	}
	return e
}

// parseRetryAfter reads delta-seconds or an HTTP-date (RFC 9110 §10.2.3) as a duration from
// now, capped at maxRetryAfter; anything else, or a date in the past, is 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if v[0] >= '0' && v[0] <= '9' {
		secs, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return maxRetryAfter
			}
			return 0
		}
		return time.Duration(min(secs, uint64(maxRetryAfter/time.Second))) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	d := t.Sub(now)
	if d <= 0 {
		return 0
	}
	return min(d, maxRetryAfter).Round(time.Second)
}

// stringField returns fields[key] when it is a JSON string.
func stringField(fields map[string]json.RawMessage, key string) (string, bool) {
	raw, ok := fields[key]
	if !ok {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// printable keeps the printable ASCII characters of s and trims surrounding spaces.
func printable(s string) string {
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' {
			return -1
		}
		return r
	}, s))
}

// readable keeps the printable characters of an IdP's text, turning line
// breaks and tabs into single spaces. Control characters (terminal escapes,
// a forged log line), format characters (bidi overrides) and invalid UTF-8
// are dropped, so the text is safe in a log line or on the status page.
func readable(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			return ' '
		case r == utf8.RuneError || !unicode.IsPrint(r):
			return -1
		}
		return r
	}, s)
	return strings.Join(strings.Fields(s), " ")
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// quote renders a value from the response body for an error or note: printable ASCII, short,
// and withheld entirely if it contains the access token.
func quote(v, token string) string {
	v = printable(v)
	if token != "" && strings.Contains(v, token) {
		return "[withheld]"
	}
	if len(v) > maxQuotedLen {
		return strconv.Quote(v[:maxQuotedLen]) + "..."
	}
	return strconv.Quote(v)
}
