package filter

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/canonpath"
)

// RouteVerdict is one route that names a request's host, and why it does
// not take the request ("" for the route that does).
type RouteVerdict struct {
	Route config.Route
	Why   string
}

// Explain lists the routes that name host, in the order Decide tries them,
// each with why it does not take path and method; the first with an empty
// Why is the route Decide picks. Wildcards of the host itself (*.host, which
// never match the bare host) come last, so a near miss is visible too. It
// is for people reading a denial (`tokenbroker check`), not for the hit
// path: it walks every route.
func Explain(routes []config.Route, host, path, method string) []RouteVerdict {
	host = normalizeHost(host)
	path, pathOK := canonpath.Canonical(path) // routes are decided on the canonical path
	var out, apex []RouteVerdict
	// Exact routes first, then wildcards from the most specific suffix
	// outwards: the order table.match tries them.
	names := []string{host}
	for i := 0; i < len(host); i++ {
		if host[i] == '.' {
			names = append(names, "*."+host[i+1:])
		}
	}
	for _, name := range names {
		for _, r := range routes {
			if normalizeHost(r.Host) == name {
				why := whyNot(r, path, method)
				if !pathOK {
					why = "the path is ambiguous (its meaning depends on who decodes it): no route takes it"
				}
				out = append(out, RouteVerdict{Route: r, Why: why})
			}
		}
	}
	for _, r := range routes {
		if normalizeHost(r.Host) == "*."+host {
			apex = append(apex, RouteVerdict{Route: r, Why: fmt.Sprintf("%s matches subdomains of %s, never %s itself", r.Host, host, host)})
		}
	}
	return append(out, apex...)
}

// whyNot says why route r does not take path and method, "" when it does.
func whyNot(r config.Route, path, method string) string {
	var why []string
	if len(r.Methods) > 0 && !slices.ContainsFunc(r.Methods, func(m string) bool { return strings.EqualFold(m, method) }) {
		why = append(why, fmt.Sprintf("method %s is not one of %s", method, strings.Join(r.Methods, ", ")))
	}
	if !hasPathPrefix(path, r.PathPrefix) {
		why = append(why, fmt.Sprintf("path %s is outside path_prefix %s", path, r.PathPrefix))
	}
	return strings.Join(why, "; ")
}
