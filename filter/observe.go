package filter

import (
	"context"

	"github.com/tokenbroker/tokenbroker/telemetry"
)

// What the filter tells the Check's span: the credential chosen and the
// route that chose it. Only configuration names, never request data.

// trace notes b and its route on ctx's span when that span is recorded.
// It matches the route again rather than carry it out of pick: a second
// lookup for a sampled Check costs less than a field on every hit.
func (f *Filter) trace(ctx context.Context, r *Request, path string, b *binding) {
	span := telemetry.Recording(ctx)
	if span == nil || b == nil {
		return
	}
	route := "context_extensions"
	if r.Credential == "" {
		rt, _ := f.routes.match(r.Host, path, r.Method, true) // b != nil: path is canonical
		route = f.routeNames[rt]
	}
	span.SetAttributes(telemetry.KeyCredential.String(b.key.Name), telemetry.KeyRoute.String(route))
}

// nameRoutes labels every route host[path_prefix] for spans, only while
// tracing is on (a filter built with tracing off never records a route).
func nameRoutes(t *table) map[*route]string {
	if !telemetry.Enabled() {
		return nil
	}
	names := map[*route]string{}
	for host, rs := range t.exact {
		for i := range rs {
			names[&rs[i]] = host + rs[i].pathPrefix
		}
	}
	for suffix, rs := range t.wildcard {
		for i := range rs {
			names[&rs[i]] = "*." + suffix + rs[i].pathPrefix
		}
	}
	return names
}
