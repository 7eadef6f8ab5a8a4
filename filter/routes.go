package filter

import (
	"strings"

	"github.com/tokenbroker/tokenbroker/config"
)

// route is one compiled `routes:` entry.
type route struct {
	pathPrefix string
	methods    []string
	binding    *binding
	remove     []string // remove_headers, without the binding's own header
}

// table finds the first route for a request: exact host routes first, then
// wildcard routes from the most specific suffix outwards. Lookups cost one map
// probe per label of the host, however many routes there are.
type table struct {
	exact    map[string][]route
	wildcard map[string][]route // "*.example.com" is stored under "example.com"
}

func newTable(routes []config.Route, bindings map[string]*binding) *table {
	t := &table{exact: map[string][]route{}, wildcard: map[string][]route{}}
	for _, r := range routes {
		host := normalizeHost(r.Host)
		cr := route{pathPrefix: r.PathPrefix, methods: r.Methods, binding: bindings[r.Credential]}
		for _, h := range r.RemoveHeaders {
			h = strings.ToLower(h)
			// Envoy removes after setting: listing the injected header would strip the token.
			if cr.binding == nil || h != cr.binding.header {
				cr.remove = append(cr.remove, h)
			}
		}
		if suffix, ok := strings.CutPrefix(host, "*."); ok {
			t.wildcard[suffix] = append(t.wildcard[suffix], cr)
		} else {
			t.exact[host] = append(t.exact[host], cr)
		}
	}
	return t
}

// match returns the route for host/path/method, or nil.
func (t *table) match(host, path, method string) *route {
	host = normalizeHost(host)
	if b := first(t.exact[host], path, method); b != nil {
		return b
	}
	for i := 0; i < len(host); i++ {
		if host[i] == '.' {
			if b := first(t.wildcard[host[i+1:]], path, method); b != nil {
				return b
			}
		}
	}
	return nil
}

func first(rs []route, path, method string) *route {
	for i := range rs {
		if rs[i].matches(path, method) {
			return &rs[i]
		}
	}
	return nil
}

func (r *route) matches(path, method string) bool {
	if len(r.methods) > 0 {
		ok := false
		for _, m := range r.methods {
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

// hasPathPrefix matches whole path segments: "/v1" matches "/v1", "/v1/x" and
// "/v1?q", but not "/v10", so a prefix never leaks a credential to a sibling API.
func hasPathPrefix(path, prefix string) bool {
	if prefix == "" || prefix == "/" {
		return true
	}
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	if len(path) == len(prefix) || prefix[len(prefix)-1] == '/' {
		return true
	}
	c := path[len(prefix)]
	return c == '/' || c == '?' || c == '#'
}

// normalizeHost lower-cases host and strips a port, without allocating when
// the host is already lower-case.
func normalizeHost(host string) string {
	if strings.HasPrefix(host, "[") { // [::1]:8080
		if i := strings.IndexByte(host, ']'); i > 0 {
			host = host[1:i]
		}
	} else if i := strings.LastIndexByte(host, ':'); i >= 0 && strings.IndexByte(host, ':') == i {
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".") // "example.com." is the same host
	return strings.ToLower(host)
}
