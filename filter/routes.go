package filter

import (
	"strings"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/canonpath"
)

// route is one compiled `routes:` entry.
type route struct {
	pathPrefix string // canonical (canonpath); "" matches every path
	binding    *binding
	more       *routeMore // nil: any method, nothing to remove (most routes)
}

// routeMore is what only some routes set, out of line: 100,000 routes of a
// host and a credential each must not carry ~56 bytes of empty fields.
type routeMore struct {
	never   bool // the prefix is ambiguous: config validation refuses it, this is the backstop
	methods []string
	remove  []string // remove_headers, without the binding's own header
}

// removes is the route's remove_headers (shared: do not modify).
func (r *route) removes() []string {
	if r.more == nil {
		return nil
	}
	return r.more.remove
}

// maxHostLabels is the most labels a DNS name of at most 253 bytes can have;
// it sizes the suffix positions wildcard matching keeps on the stack.
const maxHostLabels = 127

// table finds the first route for a request: exact host routes first, then
// wildcard routes from the most specific suffix outwards. A lookup probes
// the exact map once and the wildcard map once per label of the longest
// configured wildcard suffix, never once per label of the host: a host of
// many labels costs no more than a short one.
type table struct {
	exact     map[string][]route
	wildcard  map[string][]route // "*.example.com" is stored under "example.com"
	maxLabels int                // labels of the longest wildcard suffix
}

func newTable(routes []config.Route, bindings map[string]*binding) *table {
	t := &table{exact: map[string][]route{}, wildcard: map[string][]route{}}
	for _, r := range routes {
		host := normalizeHost(r.Host)
		cr := route{binding: bindings[r.Credential]}
		more := routeMore{methods: r.Methods}
		if r.PathPrefix != "" {
			cr.pathPrefix, more.never = canonicalPrefix(r.PathPrefix)
		}
		for _, h := range r.RemoveHeaders {
			h = strings.ToLower(h)
			// Envoy removes after setting: listing the injected header would strip the token.
			if cr.binding == nil || h != cr.binding.header {
				more.remove = append(more.remove, h)
			}
		}
		if more.never || len(more.methods) > 0 || len(more.remove) > 0 {
			cr.more = &more
		}
		if suffix, ok := strings.CutPrefix(host, "*."); ok {
			t.wildcard[suffix] = append(t.wildcard[suffix], cr)
			t.maxLabels = max(t.maxLabels, min(strings.Count(suffix, ".")+1, maxHostLabels))
		} else {
			t.exact[host] = append(t.exact[host], cr)
		}
	}
	return t
}

// canonicalPrefix is a path_prefix in the form requests are matched in.
// never is set for a prefix no canonical path can match.
func canonicalPrefix(p string) (prefix string, never bool) {
	if strings.ContainsAny(p, "?#") {
		return "", true
	}
	c, ok := canonpath.Canonical(p)
	return c, !ok
}

// match returns the route for host/method and the canonical path, or nil.
// known reports whether any route names the host at all, whatever its path
// and methods; with pathOK false (an ambiguous path) no route is chosen and
// only known is answered. A host longer than MaxHostBytes names no route.
func (t *table) match(host, path, method string, pathOK bool) (rt *route, known bool) {
	if len(host) > MaxHostBytes {
		return nil, false
	}
	host = normalizeHost(host)
	if probed != nil {
		probed(host)
	}
	if rs := t.exact[host]; len(rs) > 0 {
		if !pathOK {
			return nil, true
		}
		if r := first(rs, path, method); r != nil {
			return r, true
		}
		known = true
	}
	if t.maxLabels == 0 {
		return nil, known
	}
	// The starts of the suffixes of 1..maxLabels labels, right to left.
	var starts [maxHostLabels]int
	n := 0
	for i := len(host) - 1; i > 1 && n < t.maxLabels; i-- { // i > 1: the wildcard's own label is not empty
		if host[i-1] == '.' {
			starts[n] = i
			n++
		}
	}
	for n--; n >= 0; n-- { // the longest suffix is the most specific
		suffix := host[starts[n]:]
		if probed != nil {
			probed(suffix)
		}
		rs := t.wildcard[suffix]
		if len(rs) == 0 {
			continue
		}
		if !pathOK {
			return nil, true
		}
		known = true
		if r := first(rs, path, method); r != nil {
			return r, true
		}
	}
	return nil, known
}

// probed, when set (by tests only), is called with every key match looks
// up, so a test can assert how much work a lookup did.
var probed func(key string)

func first(rs []route, path, method string) *route {
	for i := range rs {
		if rs[i].matches(path, method) {
			return &rs[i]
		}
	}
	return nil
}

func (r *route) matches(path, method string) bool {
	if m := r.more; m != nil && m.never {
		return false
	}
	if m := r.more; m != nil && len(m.methods) > 0 {
		ok := false
		for _, m := range m.methods {
			if strings.EqualFold(m, method) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return hasPathPrefix(path, r.pathPrefix)
}

// hasPathPrefix matches whole path segments of a canonical path: "/v1"
// matches "/v1" and "/v1/x", but not "/v10", so a prefix never leaks a
// credential to a sibling API.
func hasPathPrefix(path, prefix string) bool {
	if prefix == "" || prefix == "/" {
		return true
	}
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || prefix[len(prefix)-1] == '/' || path[len(prefix)] == '/'
}

// normalizeHost lower-cases host and strips a port in one pass, without
// allocating when the host is already lower-case.
func normalizeHost(host string) string {
	upper := false
	if strings.HasPrefix(host, "[") { // [::1]:8080
		if i := strings.IndexByte(host, ']'); i > 0 {
			host = host[1:i]
		}
		upper = true // hex digits may be either case; rare enough to just lower
	} else {
		colons, last := 0, -1
		for i := 0; i < len(host); i++ {
			switch c := host[i]; {
			case c == ':':
				colons, last = colons+1, i
			case 'A' <= c && c <= 'Z':
				upper = true
			}
		}
		if colons == 1 { // host:port; more colons are a bare IPv6 address
			host = host[:last]
		}
	}
	host = strings.TrimSuffix(host, ".") // "example.com." is the same host
	if upper {
		return strings.ToLower(host)
	}
	return host
}
