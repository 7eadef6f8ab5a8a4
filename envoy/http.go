package envoy

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/filter"
	"github.com/tokenbroker/tokenbroker/internal/httpserver"
	"github.com/tokenbroker/tokenbroker/telemetry"
)

// Forward-auth headers, in the spelling each proxy sends them.
const (
	hdrFwdMethod  = "X-Forwarded-Method" // Caddy forward_auth, Traefik forwardAuth
	hdrFwdURI     = "X-Forwarded-Uri"
	hdrFwdHost    = "X-Forwarded-Host"
	hdrFwdProto   = "X-Forwarded-Proto"
	hdrOrigURI    = "X-Original-Uri" // nginx auth_request, by convention (canonical form of X-Original-URI)
	hdrOrigMethod = "X-Original-Method"
)

// Errors RequestFromHTTP returns. Their texts are sent as the reason header,
// so they name headers but never echo a value.
var (
	ErrConflictingURI    = errors.New("conflicting X-Forwarded-Uri and X-Original-URI")
	ErrConflictingMethod = errors.New("conflicting X-Forwarded-Method and X-Original-Method")
	ErrRepeatedHeader    = errors.New("repeated forward-auth header")
	ErrBadURI            = errors.New("original URI is not a path")
	ErrBadMethod         = errors.New("original method is not a token")
	ErrNoHost            = errors.New("no destination host")
	ErrBadHost           = errors.New("destination host is malformed")
)

// RequestFromHTTP reconstructs the original request a proxy is asking about.
//
// Under envoyPrefix (Envoy http_service or Istio envoyExtAuthzHttp with that
// path_prefix) the request itself is the original: its method, its path
// after the prefix, its Host. Envoy forwards client headers verbatim, so
// every X-Forwarded-* and X-Original-* header is ignored there.
//
// Otherwise the destination comes from forward-auth headers:
//   - host: X-Forwarded-Host, else Host;
//   - path: X-Forwarded-Uri or X-Original-URI, else the request's own target;
//   - method: X-Forwarded-Method or X-Original-Method, else the request's own.
//
// When both spellings of the path or of the method are present they must
// agree, and none may be repeated: a client can smuggle the header its proxy
// does not overwrite, and a disagreement means exactly that, so the request is
// refused instead of trusting either. X-Forwarded-Proto is accepted but not
// used: routes do not depend on the scheme.
func RequestFromHTTP(r *http.Request, envoyPrefix string) (filter.Request, error) {
	target := r.RequestURI
	if !strings.HasPrefix(target, "/") {
		target = r.URL.RequestURI() // absolute-form or a request built in process
	}
	if rest, ok := cutPathPrefix(target, envoyPrefix); ok {
		if !validHost(r.Host) {
			return filter.Request{}, hostErr(r.Host)
		}
		if !validMethod(r.Method) {
			return filter.Request{}, ErrBadMethod
		}
		return filter.Request{Host: r.Host, Path: rest, Method: r.Method}, nil
	}

	uri, err := agree(r.Header, hdrFwdURI, hdrOrigURI, ErrConflictingURI)
	if err != nil {
		return filter.Request{}, err
	}
	method, err := agree(r.Header, hdrFwdMethod, hdrOrigMethod, ErrConflictingMethod)
	if err != nil {
		return filter.Request{}, err
	}
	host, err := single(r.Header, hdrFwdHost)
	if err != nil {
		return filter.Request{}, err
	}
	if _, err := single(r.Header, hdrFwdProto); err != nil {
		return filter.Request{}, err
	}
	if uri == "" {
		uri = target
	}
	if method == "" {
		method = r.Method
	}
	if host == "" {
		host = r.Host
	}
	if !strings.HasPrefix(uri, "/") || strings.ContainsFunc(uri, isCTL) {
		return filter.Request{}, ErrBadURI
	}
	if !validMethod(method) {
		return filter.Request{}, ErrBadMethod
	}
	if !validHost(host) {
		return filter.Request{}, hostErr(host)
	}
	return filter.Request{Host: host, Path: uri, Method: strings.ToUpper(method)}, nil
}

// cutPathPrefix splits target at prefix on a segment boundary: "/envoy/v1"
// and "/envoy?q" are under /envoy, "/envoyx" is not. The rest always starts
// with "/".
func cutPathPrefix(target, prefix string) (string, bool) {
	if prefix == "" {
		return "", false
	}
	rest, ok := strings.CutPrefix(target, prefix)
	switch {
	case !ok:
		return "", false
	case rest == "":
		return "/", true
	case rest[0] == '/':
		return rest, true
	case rest[0] == '?':
		return "/" + rest, true
	}
	return "", false
}

// agree returns the value of whichever of two headers is present; both
// present must be equal, and neither may be repeated.
func agree(h http.Header, a, b string, conflict error) (string, error) {
	va, err := single(h, a)
	if err != nil {
		return "", err
	}
	vb, err := single(h, b)
	if err != nil {
		return "", err
	}
	switch {
	case va == "":
		return vb, nil
	case vb == "" || va == vb:
		return va, nil
	}
	return "", conflict
}

// single returns a header's value, refusing a repeated one: which copy a
// proxy appended and which the client sent cannot be told apart.
func single(h http.Header, name string) (string, error) {
	v := h[name]
	switch len(v) {
	case 0:
		return "", nil
	case 1:
		return strings.TrimSpace(v[0]), nil
	}
	return "", ErrRepeatedHeader
}

func hostErr(h string) error {
	if h == "" {
		return ErrNoHost
	}
	return ErrBadHost
}

// validHost accepts what a Host header may hold: no spaces, controls, "/",
// "@", "?" or "#". Its length is bounded by the filter (filter.MaxHostBytes,
// "host too long"), the same way on both transports.
func validHost(h string) bool {
	if h == "" {
		return false
	}
	return !strings.ContainsFunc(h, func(c rune) bool {
		return c <= ' ' || c >= 0x7f || strings.ContainsRune("/@?#\\,", c)
	})
}

func validMethod(m string) bool {
	if m == "" || len(m) > 32 {
		return false
	}
	for _, c := range m {
		if !(strings.ContainsRune("!#$%&'*+-.^_`|~", c) || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

func isCTL(c rune) bool { return c < ' ' || c == 0x7f }

// NewForwardAuthServer returns an http.Server for h that speaks HTTP/1.1 and
// cleartext HTTP/2 (an Envoy http_service cluster may use either), with
// header, read, write and idle timeouts and a header size limit.
func NewForwardAuthServer(h http.Handler) *http.Server {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := httpserver.New(h, httpserver.Limits{})
	srv.Protocols = p
	return srv
}

// ForwardAuth is the HTTP forward-auth server: any method, any path. It asks
// the same decider as the gRPC server, so routes, credentials, cache and
// metrics are shared.
type ForwardAuth struct {
	decider     *Current
	envoyPrefix string
	log         *zap.Logger
}

// NewForwardAuth answers forward-auth requests with the decider held in cur.
// envoyPrefix is forward_auth.envoy_path_prefix ("" = off).
func NewForwardAuth(cur *Current, envoyPrefix string, log *zap.Logger) *ForwardAuth {
	if log == nil {
		log = zap.NewNop()
	}
	return &ForwardAuth{decider: cur, envoyPrefix: envoyPrefix, log: log}
}

// ServeHTTP answers 200 with the header to inject when the request may go
// out, or 403 / 503 with x-tokenbroker-reason and a short JSON body.
func (f *ForwardAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if telemetry.Enabled() {
		f.tracedServe(w, r) // observe.go
		return
	}
	f.serve(w, r)
}

func (f *ForwardAuth) serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store") // the answer may carry a token
	if r.ContentLength != 0 && r.ProtoMajor == 1 {
		// The decision never needs a body. To keep the connection, net/http
		// reads (discards) a declared body before writing the answer and
		// again after it, so a body that never comes would hold the answer,
		// then the connection, until the read timeout. Close after the
		// answer, and make any read of this connection fail from now on.
		h.Set("Connection", "close")
		_ = http.NewResponseController(w).SetReadDeadline(time.Now())
	}
	req, err := RequestFromHTTP(r, f.envoyPrefix)
	if err != nil {
		f.log.Debug("malformed forward-auth request", zap.Error(err))
		// Denied with this reason, and counted with what the request line says.
		req = filter.Request{Invalid: err.Error(), Host: r.Host, Path: r.URL.Path, Method: r.Method}
	}
	req.Transport = filter.TransportHTTP
	d := f.decider.Load().Decide(r.Context(), &req)
	if !d.Allowed {
		deny(w, d.Status, d.Reason)
		return
	}
	if d.Header.Name != "" {
		h.Set(d.Header.Name, d.Header.Value)
	}
	if len(d.Remove) > 0 {
		// Envoy http_service (and Istio envoyExtAuthzHttp) read a route's
		// remove_headers from this header; the filter never lists the
		// injected header in it. Other proxies ignore it.
		h.Set(HeadersToRemoveHeader, strings.Join(d.Remove, ", "))
	}
	w.WriteHeader(http.StatusOK)
}

// HeadersToRemoveHeader is how an HTTP authorization service tells Envoy
// which request headers to remove before the request goes upstream.
const HeadersToRemoveHeader = "x-envoy-auth-headers-to-remove"

func deny(w http.ResponseWriter, status int, reason string) {
	if status != http.StatusServiceUnavailable {
		status = http.StatusForbidden
	}
	h := w.Header()
	h.Set(filter.ReasonHeader, reason)
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Reason string `json:"reason"`
	}{reason})
}
