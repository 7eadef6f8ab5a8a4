// Package devidp is a small OAuth 2.0 identity provider for development and tests: it issues
// opaque bearer tokens with the client credentials grant, counts what it mints, and can be
// told to fail or hang so callers' error handling can be exercised.
//
// It is not an IdP to trust with anything: tokens are random strings that nothing verifies.
package devidp

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultLifetime is the token lifetime when Options.Lifetime is not set.
const DefaultLifetime = time.Hour

const maxFormBytes = 64 << 10

// Options configures a Server.
type Options struct {
	// Clients maps client_id to client_secret.
	Clients map[string]string
	// Lifetime is the expires_in of issued tokens (DefaultLifetime when not positive).
	Lifetime time.Duration
	// Logf, when set, gets one line per mint; never a token or secret.
	Logf func(format string, args ...any)
}

// Server is the IdP as an http.Handler serving POST /oauth/token, GET /healthz and GET /stats.
// All its methods are safe for concurrent use.
type Server struct {
	clients map[string]string
	logf    func(format string, args ...any)
	mux     *http.ServeMux

	mints    atomic.Int64
	requests atomic.Int64

	mu       sync.Mutex // guards the fields below
	lifetime time.Duration
	byClient map[string]int64
	lastForm url.Values
	down     *failure
	hang     <-chan struct{}
}

// failure is a canned answer set by SetDown.
type failure struct {
	status     int
	body       string
	retryAfter string
}

// New returns a Server for opts. The Clients map is copied.
func New(opts Options) *Server {
	s := &Server{
		clients:  make(map[string]string, len(opts.Clients)),
		logf:     opts.Logf,
		mux:      http.NewServeMux(),
		byClient: make(map[string]int64),
	}
	for id, secret := range opts.Clients {
		s.clients[id] = secret
	}
	s.SetLifetime(opts.Lifetime)
	s.mux.HandleFunc("POST /oauth/token", s.token)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	s.mux.HandleFunc("GET /stats", s.stats)
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// SetLifetime changes the lifetime of tokens issued from now on; d ≤ 0 restores DefaultLifetime.
// Lifetimes are sent as whole seconds, so one under a second is sent as expires_in 0.
func (s *Server) SetLifetime(d time.Duration) {
	if d <= 0 {
		d = DefaultLifetime
	}
	s.mu.Lock()
	s.lifetime = d
	s.mu.Unlock()
}

// SetDown makes every token request answer status with body and, when retryAfter is not
// empty, a Retry-After header. Status 0 makes the server healthy again.
func (s *Server) SetDown(status int, body, retryAfter string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if status == 0 {
		s.down = nil
		return
	}
	s.down = &failure{status: status, body: body, retryAfter: retryAfter}
}

// SetHang makes token requests wait until ch is closed (then they are answered as usual) or
// their context ends (then they get no answer). A nil ch stops hanging new requests.
func (s *Server) SetHang(ch <-chan struct{}) {
	s.mu.Lock()
	s.hang = ch
	s.mu.Unlock()
}

// Mints is the number of tokens issued.
func (s *Server) Mints() int64 { return s.mints.Load() }

// MintsFor is the number of tokens issued to clientID.
func (s *Server) MintsFor(clientID string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byClient[clientID]
}

// Requests is the number of POST /oauth/token requests received, whatever their outcome.
func (s *Server) Requests() int64 { return s.requests.Load() }

// LastForm returns a copy of the form of the last token request that could be parsed, with
// client_secret removed; nil before the first one.
func (s *Server) LastForm() url.Values {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cloneValues(s.lastForm)
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)

	s.mu.Lock()
	hang := s.hang
	s.mu.Unlock()
	if hang != nil {
		select {
		case <-hang:
		case <-r.Context().Done():
			return
		}
	}

	s.mu.Lock()
	down := s.down
	s.mu.Unlock()
	if down != nil {
		writeCanned(w, down)
		return
	}

	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		writeError(w, http.StatusBadRequest, "invalid_request", "Content-Type must be application/x-www-form-urlencoded")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", "malformed form body")
		return
	}
	form := r.PostForm
	recorded := cloneValues(form)
	recorded.Del("client_secret")
	s.mu.Lock()
	s.lastForm = recorded
	s.mu.Unlock()

	for k, v := range form {
		if len(v) > 1 {
			writeError(w, http.StatusBadRequest, "invalid_request", "parameter "+k+" repeated")
			return
		}
	}

	clientID, ok := s.authenticate(w, r, form)
	if !ok {
		return
	}

	switch gt := form.Get("grant_type"); gt {
	case "client_credentials":
	case "":
		writeError(w, http.StatusBadRequest, "invalid_request", "grant_type is required")
		return
	default:
		writeError(w, http.StatusBadRequest, "unsupported_grant_type", "only client_credentials is supported")
		return
	}

	s.mint(w, clientID, form.Get("scope"))
}

// authenticate checks client_secret_basic or client_secret_post credentials, answering the
// request itself when they are missing or wrong.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, form url.Values) (string, bool) {
	var id, secret string
	if r.Header.Get("Authorization") != "" {
		user, pass, ok := r.BasicAuth()
		if !ok {
			writeClientError(w, "Authorization header is not HTTP Basic")
			return "", false
		}
		if form.Has("client_secret") {
			writeError(w, http.StatusBadRequest, "invalid_request", "more than one client authentication method used")
			return "", false
		}
		// RFC 6749 §2.3.1: both halves are form-urlencoded inside the Basic credentials.
		var err1, err2 error
		id, err1 = url.QueryUnescape(user)
		secret, err2 = url.QueryUnescape(pass)
		if err1 != nil || err2 != nil {
			writeClientError(w, "Basic credentials are not form-urlencoded")
			return "", false
		}
		if fid := form.Get("client_id"); fid != "" && fid != id {
			writeError(w, http.StatusBadRequest, "invalid_request", "client_id in body differs from Basic credentials")
			return "", false
		}
	} else {
		if !form.Has("client_id") {
			writeClientError(w, "client authentication required")
			return "", false
		}
		id, secret = form.Get("client_id"), form.Get("client_secret")
	}
	want, known := s.clients[id]
	// Compare even for unknown clients so timing says nothing about which ids exist.
	if !known {
		want = "\x00unknown client"
	}
	if subtle.ConstantTimeCompare([]byte(secret), []byte(want)) != 1 || !known {
		writeClientError(w, "Client authentication failed")
		return "", false
	}
	return id, true
}

func (s *Server) mint(w http.ResponseWriter, clientID, scope string) {
	raw := make([]byte, 32)
	_, _ = rand.Read(raw) // never fails (crypto/rand crashes the program instead)
	tok := "devidp." + base64.RawURLEncoding.EncodeToString(raw)

	s.mu.Lock()
	lifetime := s.lifetime
	s.byClient[clientID]++
	s.mu.Unlock()
	total := s.mints.Add(1)

	body := map[string]any{
		"access_token": tok,
		"token_type":   "Bearer",
		"expires_in":   int64(lifetime / time.Second),
	}
	if scope != "" {
		body["scope"] = scope
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, body)
	if s.logf != nil {
		s.logf("mint client=%s lifetime=%s total=%d", clientID, lifetime, total)
	}
}

func (s *Server) stats(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	by := make(map[string]int64, len(s.byClient))
	for id, n := range s.byClient {
		by[id] = n
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"mints":     s.Mints(),
		"requests":  s.Requests(),
		"by_client": by,
	})
}

func writeCanned(w http.ResponseWriter, f *failure) {
	if f.retryAfter != "" {
		w.Header().Set("Retry-After", f.retryAfter)
	}
	ct := "text/plain; charset=utf-8"
	switch b := strings.TrimSpace(f.body); {
	case json.Valid([]byte(b)):
		ct = "application/json"
	case strings.HasPrefix(b, "<"):
		ct = "text/html; charset=utf-8"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(f.status)
	_, _ = w.Write([]byte(f.body))
}

// writeClientError answers invalid_client as RFC 6749 §5.2 asks: 401 with a challenge.
func writeClientError(w http.ResponseWriter, description string) {
	w.Header().Set("WWW-Authenticate", `Basic realm="devidp"`)
	writeError(w, http.StatusUnauthorized, "invalid_client", description)
}

func writeError(w http.ResponseWriter, status int, code, description string) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, status, map[string]string{"error": code, "error_description": description})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func cloneValues(v url.Values) url.Values {
	if v == nil {
		return nil
	}
	c := make(url.Values, len(v))
	for k, vs := range v {
		c[k] = append([]string(nil), vs...)
	}
	return c
}
