package envoy_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/tokenbroker/tokenbroker/filter"
)

// The differential fuzz test: generated route tables and generated
// requests go through BOTH real listeners (gRPC over loopback, HTTP
// forward-auth over a socket, in every dialect), and the credential each
// injects must be exactly the one a small reference matcher picks on the
// canonical path, or a denial where the reference denies. The reference
// shares no code with tokenbroker: the generator builds each request from a
// canonical path it knows, then spells it in hostile ways (escapes of
// unreserved characters, doubled slashes, queries full of dot segments) or
// makes it ambiguous on purpose (dot segments in any spelling, encoded
// slashes, backslashes, bad escapes), so the reference knows the answer
// without parsing anything. Each credential is static with its own value,
// so the injected value names the credential.

var (
	fuzzCreds = []string{"c0", "c1", "c2", "c3", "c4", "c5"}

	// Route hosts as written in the config.
	fuzzRouteHosts = []string{"api.example.com", "*.example.com", "*.eu.example.com", "eu.example.com",
		"x.eu.example.com", "10.0.0.1", "[::1]", "*.example.org", "*.a.b.c.example.org"}

	// Route prefixes as written, and their canonical form.
	fuzzPrefixes = [][2]string{{"", ""}, {"/", "/"}, {"/v1", "/v1"}, {"/v1/", "/v1/"}, {"/v1/admin", "/v1/admin"},
		{"/admin", "/admin"}, {"/v10", "/v10"}, {"/v%31/x", "/v1/x"}, {"//v1", "/v1"}, {"/caf%c3%a9", "/caf%C3%A9"}, {"/a;b", "/a;b"}}

	fuzzMethods = [][]string{nil, {"GET"}, {"POST", "DELETE"}, {"get", "PATCH"}}

	// Request hosts (before port, case and trailing-dot variations).
	fuzzHosts = []string{"api.example.com", "a.api.example.com", "example.com", "eu.example.com", "x.eu.example.com",
		"y.x.eu.example.com", "z.eu.example.com", "evil-example.com", "api.example.com.evil.net", "10.0.0.1",
		"::1", "q.example.org", "d.a.b.c.example.org", "a.b.c.example.org", "example.org"}

	fuzzReqMethods = []string{"GET", "POST", "DELETE", "get", "PATCH", "PUT"}

	// Canonical path segments; the hostile spellings are made from these.
	fuzzSegments = []string{"v1", "v10", "admin", "x", "a;b", "~u", "caf%C3%A9", "a.b", "v1;x"}

	// Spellings that make a path ambiguous, inserted as a segment…
	fuzzAmbiguousSegments = []string{"..", ".", "%2e%2e", "%2E.", ".%2e", "..;x", "%2e%2e%3b", "...", ". .", "%2e", ".%2E;a=b"}
	// …or inside one.
	fuzzAmbiguousInfix = []string{"%2f", "%2F", "%5c", "%5C", "\\", "%00", "%zz", "%252e", "%c0%ae", "%", "%1"}
)

// bits reads small numbers from the fuzzer's bytes, and zeros after the end.
type bits struct{ b []byte }

func (r *bits) n(k int) int {
	if len(r.b) == 0 {
		return 0
	}
	v := int(r.b[0])
	r.b = r.b[1:]
	return v % k
}

type fuzzRoute struct {
	host, prefix string // host as written, canonical prefix
	methods      []string
	cred         string
}

func genRoutes(r *bits) (routes []fuzzRoute, allow bool, yaml string) {
	allow = r.n(2) == 1
	var b strings.Builder
	fmt.Fprintf(&b, "default_action: %s\nroutes:\n", map[bool]string{true: "allow", false: "deny"}[allow])
	for range 1 + r.n(8) {
		rt := fuzzRoute{host: fuzzRouteHosts[r.n(len(fuzzRouteHosts))], methods: fuzzMethods[r.n(len(fuzzMethods))],
			cred: fuzzCreds[r.n(len(fuzzCreds))]}
		p := fuzzPrefixes[r.n(len(fuzzPrefixes))]
		rt.prefix = p[1]
		fmt.Fprintf(&b, "  - {host: %q, credential: %s", rt.host, rt.cred)
		if p[0] != "" {
			fmt.Fprintf(&b, ", path_prefix: %q", p[0])
		}
		if rt.methods != nil {
			fmt.Fprintf(&b, ", methods: [%s]", strings.Join(rt.methods, ", "))
		}
		b.WriteString("}\n")
		routes = append(routes, rt)
	}
	return routes, allow, b.String()
}

type fuzzRequest struct {
	host, wireHost string // canonical (lower-case, no port) and as sent
	path, wirePath string // canonical and as sent
	ambiguous      bool
	method, cred   string // cred: context_extensions (gRPC only)
}

func genRequest(r *bits) fuzzRequest {
	q := fuzzRequest{host: fuzzHosts[r.n(len(fuzzHosts))], method: fuzzReqMethods[r.n(len(fuzzReqMethods))]}
	q.wireHost = q.host
	if r.n(2) == 1 { // case
		q.wireHost = strings.ToUpper(q.wireHost[:1]) + q.wireHost[1:]
	}
	if r.n(4) == 0 && !strings.Contains(q.host, ":") {
		q.wireHost += "."
	}
	switch port := r.n(3); {
	case q.host == "::1":
		q.wireHost = "[::1]" + []string{"", ":8443", ":80"}[port]
	case port > 0:
		q.wireHost += []string{"", ":8443", ":80"}[port]
	}
	switch r.n(8) {
	case 1:
		q.cred = fuzzCreds[r.n(len(fuzzCreds))]
	case 2:
		q.cred = "nope"
	}

	var segs []string
	for range r.n(5) {
		segs = append(segs, fuzzSegments[r.n(len(fuzzSegments))])
	}
	trailing := r.n(3) == 0 && len(segs) > 0
	q.path = "/" + strings.Join(segs, "/")
	if trailing {
		q.path += "/"
	}

	// The hostile but unambiguous spelling.
	var w strings.Builder
	w.WriteByte('/')
	for i, s := range segs {
		if i > 0 {
			w.WriteString(strings.Repeat("/", 1+r.n(3)/2)) // sometimes "//"
		}
		for j := 0; j < len(s); j++ {
			c := s[j]
			switch {
			case c == '%': // an escape: as it is, with lower-case hex, or as the raw byte
				hex := s[j+1 : j+3]
				switch r.n(3) {
				case 0:
					w.WriteString("%" + hex)
				case 1:
					w.WriteString("%" + strings.ToLower(hex))
				default:
					var v byte
					fmt.Sscanf(hex, "%02X", &v)
					w.WriteByte(v)
				}
				j += 2
			case isUnreservedByte(c) && r.n(4) == 0: // escape an unreserved character
				f := "%%%02X"
				if r.n(2) == 0 {
					f = "%%%02x"
				}
				fmt.Fprintf(&w, f, c)
			default:
				w.WriteByte(c)
			}
		}
	}
	if trailing {
		w.WriteByte('/')
	}
	if r.n(3) == 0 {
		w.WriteString([]string{"?q=1", "?next=/../../admin", "?a=%2f..%2f&b=\\"}[r.n(3)])
	}
	q.wirePath = w.String()

	// Sometimes ambiguous on purpose.
	if r.n(3) == 0 {
		q.ambiguous = true
		path, query, _ := strings.Cut(q.wirePath, "?")
		if query != "" {
			query = "?" + query
		}
		if r.n(2) == 0 || path == "/" {
			at := strings.LastIndexByte(path[:1+r.n(len(path))], '/')
			seg := fuzzAmbiguousSegments[r.n(len(fuzzAmbiguousSegments))]
			if at+1 < len(path) {
				seg += "/"
			}
			path = path[:at+1] + seg + path[at+1:]
		} else {
			at := 1 + r.n(len(path)-1)
			path = path[:at] + fuzzAmbiguousInfix[r.n(len(fuzzAmbiguousInfix))] + path[at:]
		}
		q.wirePath = path + query
	}
	return q
}

func isUnreservedByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~", c) >= 0
}

// outcome is what a listener did: denied, or allowed with the credential
// whose value it injected ("" = nothing injected).
type outcome struct {
	allowed bool
	cred    string
}

func (o outcome) String() string {
	if !o.allowed {
		return "denied"
	}
	return fmt.Sprintf("allowed(%q)", o.cred)
}

// reference is the independent matcher: exact-host routes in file order,
// then wildcard routes from the longest suffix, whole-segment prefixes on
// the canonical path, methods case-insensitive; an ambiguous path is denied
// when a credential is at stake and never gets one.
func reference(routes []fuzzRoute, allow bool, q fuzzRequest, withCred bool) outcome {
	if withCred && q.cred != "" {
		if q.ambiguous || !contains(fuzzCreds, q.cred) {
			return outcome{}
		}
		return outcome{true, q.cred}
	}
	var exact, wild []fuzzRoute
	for _, rt := range routes {
		h := strings.Trim(rt.host, "[]")
		if h == q.host {
			exact = append(exact, rt)
		}
	}
	// Wildcards, most specific (longest suffix) first, file order within one suffix.
	for n := len(q.host); n > 0; n-- {
		for _, rt := range routes {
			s, ok := strings.CutPrefix(rt.host, "*.")
			if ok && len(s) == n && strings.HasSuffix(q.host, "."+s) {
				wild = append(wild, rt)
			}
		}
	}
	for _, rt := range append(exact, wild...) {
		if q.ambiguous {
			return outcome{}
		}
		if methodOK(rt.methods, q.method) && segmentPrefix(q.path, rt.prefix) {
			return outcome{true, rt.cred}
		}
	}
	return outcome{allowed: allow}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func methodOK(methods []string, m string) bool {
	if len(methods) == 0 {
		return true
	}
	for _, x := range methods {
		if strings.EqualFold(x, m) {
			return true
		}
	}
	return false
}

func segmentPrefix(path, prefix string) bool {
	if prefix == "" || prefix == "/" {
		return true
	}
	return path == prefix || strings.HasPrefix(path, prefix) && (strings.HasSuffix(prefix, "/") || path[len(prefix)] == '/')
}

// grpcOutcome sends q over gRPC, the path in the path field or, like
// encode_raw_headers, as raw bytes in header_map.
func grpcOutcome(t *testing.T, l *listeners, q fuzzRequest, raw bool) outcome {
	var req *authv3.CheckRequest
	if raw {
		req = &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
					{Key: ":authority", RawValue: []byte(q.wireHost)},
					{Key: ":path", RawValue: []byte(q.wirePath)},
					{Key: ":method", RawValue: []byte(q.method)},
				}},
			}},
		}}
	} else {
		req = checkReq(q.wireHost, q.wirePath)
		req.Attributes.Request.Http.Method = q.method
	}
	if q.cred != "" {
		req.Attributes.ContextExtensions = map[string]string{filter.ContextExtensionKey: q.cred}
	}
	resp, err := l.grpc.Check(context.Background(), req)
	if err != nil {
		t.Fatalf("gRPC Check: %v", err)
	}
	if ok := resp.GetOkResponse(); ok != nil && resp.GetStatus().GetCode() == 0 {
		switch hs := ok.GetHeaders(); len(hs) {
		case 0:
			return outcome{allowed: true}
		case 1:
			return outcome{true, strings.TrimPrefix(hs[0].GetHeader().GetValue(), "key-")}
		default:
			t.Fatalf("several headers injected: %v", hs)
		}
	}
	if resp.GetDeniedResponse() == nil {
		t.Fatalf("neither OK nor denied: %v", resp)
	}
	return outcome{}
}

func httpOutcome(t *testing.T, code int, h http.Header) outcome {
	switch code {
	case 200:
		v := h.Get("X-Api-Key")
		if v == "" {
			return outcome{allowed: true}
		}
		return outcome{true, strings.TrimPrefix(v, "key-")}
	case 400, 403, 503: // 400: Go's HTTP server refused the raw request itself
		if h.Get("X-Api-Key") != "" {
			t.Fatalf("denial %d carries a credential", code)
		}
		return outcome{}
	}
	t.Fatalf("forward-auth status %d", code)
	return outcome{}
}

func FuzzDifferential(f *testing.F) {
	l := startListeners(f)
	tokens := newTokens(f)
	creds := staticCredentials(f, fuzzCreds...)

	// Hand-made seeds (routing order, apex, ports, IPv6, each ambiguity)
	// are in testdata/fuzz/FuzzDifferential, one file per case.
	// A spread of long random inputs, so that from the first execution
	// tables have several routes on overlapping hosts.
	rng := rand.New(rand.NewPCG(10, 10))
	for range 64 {
		table, request := make([]byte, 40), make([]byte, 48)
		for i := range table {
			table[i] = byte(rng.Uint32())
		}
		for i := range request {
			request[i] = byte(rng.Uint32())
		}
		f.Add(table, request)
	}

	f.Fuzz(func(t *testing.T, table, request []byte) {
		routes, allow, routesYAML := genRoutes(&bits{table})
		flt, err := staticDecider(t, tokens, creds+routesYAML)
		if err != nil {
			t.Fatalf("generated config does not load: %v\n%s", err, routesYAML)
		}
		l.cur.Store(flt)
		q := genRequest(&bits{request})
		ctx := fmt.Sprintf("routes:\n%srequest: %+v", routesYAML, q)

		want := reference(routes, allow, q, true)
		for _, raw := range []bool{false, true} {
			if !raw && !utf8.ValidString(q.wirePath) {
				continue // protobuf-go cannot send it in a string field; header_map carries it
			}
			if got := grpcOutcome(t, l, q, raw); got != want {
				t.Fatalf("gRPC (raw headers %v): %v, reference %v\n%s", raw, got, want, ctx)
			}
		}
		want = reference(routes, allow, q, false) // no context_extensions over HTTP
		for name, send := range httpDialects(l, q.wireHost, q.wirePath) {
			if name == "envoy http_service" {
				// Envoy sends its own method on the request line.
				send = func(tb testing.TB) (int, http.Header) {
					return l.rawHTTP(tb, q.method, "/envoy"+q.wirePath, "Host", q.wireHost)
				}
			} else {
				send = func(tb testing.TB) (int, http.Header) {
					hdr := map[string][]string{
						"nginx":         {"Host", q.wireHost, "X-Original-URI", q.wirePath, "X-Original-Method", q.method},
						"caddy/traefik": {"Host", "127.0.0.1", "X-Forwarded-Host", q.wireHost, "X-Forwarded-Uri", q.wirePath, "X-Forwarded-Method", q.method},
					}[name]
					return l.rawHTTP(tb, "GET", "/check", hdr...)
				}
			}
			code, h := send(t)
			got := httpOutcome(t, code, h)
			// Go's HTTP server answers 400 to a request line or header it
			// cannot parse: only ever for a malformed (ambiguous) request.
			if got != want && !(code == 400 && q.ambiguous) {
				t.Fatalf("forward-auth %s: %v (%d), reference %v\n%s", name, got, code, want, ctx)
			}
			if code == 400 && !q.ambiguous {
				t.Fatalf("forward-auth %s: 400 for an unambiguous request\n%s", name, ctx)
			}
		}
	})
}
