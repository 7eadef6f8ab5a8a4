package filter

import (
	"fmt"
	"testing"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/canonpath"
)

func TestRouteMatching(t *testing.T) {
	routes := []config.Route{
		{Host: "billing.example.com", PathPrefix: "/v1", Methods: []string{"GET", "POST"}, Credential: "billing-v1"},
		{Host: "billing.example.com", Credential: "billing"},
		{Host: "*.example.com", Credential: "wild"},
		{Host: "*.eu.example.com", Credential: "wild-eu"},
		{Host: "api.eu.example.com", PathPrefix: "/admin/", Credential: "admin"},
		{Host: "[::1]", Credential: "v6"},
		{Host: "10.0.0.1", Credential: "v4"},
	}
	bindings := map[string]*binding{}
	for _, r := range routes {
		bindings[r.Credential] = &binding{key: cache.Key{Name: r.Credential}}
	}
	tbl := newTable(routes, bindings)
	tests := []struct {
		host, path, method, want string
	}{
		{"billing.example.com", "/v1", "GET", "billing-v1"},
		{"billing.example.com", "/v1/invoices", "POST", "billing-v1"},
		{"billing.example.com", "/v1?x=1", "GET", "billing-v1"},
		{"BILLING.Example.COM:8443", "/v1/x", "get", "billing-v1"},
		{"billing.example.com.", "/v1/x", "GET", "billing-v1"},
		{"billing.example.com", "/v1/x", "DELETE", "billing"}, // method not listed: next route
		{"billing.example.com", "/v10", "GET", "billing"},     // segment-aware prefix
		{"billing.example.com", "/", "GET", "billing"},
		{"orders.example.com", "/", "GET", "wild"},
		{"a.b.example.com", "/", "GET", "wild"},
		{"example.com", "/", "GET", ""},                        // *.example.com does not match the apex
		{"x.eu.example.com", "/", "GET", "wild-eu"},            // most specific wildcard
		{"api.eu.example.com", "/admin/users", "GET", "admin"}, // exact beats wildcard
		{"api.eu.example.com", "/other", "GET", "wild-eu"},     // exact had no matching path
		{"api.eu.example.com", "/admin", "GET", "wild-eu"},     // "/admin/" needs the slash
		{"evil-example.com", "/", "GET", ""},
		{"example.com.evil.net", "/", "GET", ""},
		{"[::1]:9000", "/", "GET", "v6"},
		{"10.0.0.1:80", "/", "GET", "v4"},
		{"", "/", "GET", ""},
		{"billing.example.com", "/v1/../admin", "GET", ""}, // ambiguous: no route chosen
		{"billing.example.com", "//v1//x", "GET", "billing-v1"},
		{"billing.example.com", "/v%31/x", "GET", "billing-v1"},
		{"billing.example.com", "/v1;x/y", "GET", "billing"}, // "v1;x" is another segment
		{".example.com", "/", "GET", ""},                     // no empty wildcard label
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %s %s", tt.method, tt.host, tt.path), func(t *testing.T) {
			got := ""
			path, ok := canonpath.Canonical(tt.path)
			if b, _ := tbl.match(tt.host, path, tt.method, ok); b != nil {
				got = b.binding.key.Name
			}
			if got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func BenchmarkRouteMatch1000(b *testing.B) {
	var routes []config.Route
	bindings := map[string]*binding{}
	for i := range 1000 {
		name := fmt.Sprintf("c%d", i)
		host := fmt.Sprintf("svc%d.example.com", i)
		if i%2 == 1 {
			host = fmt.Sprintf("*.svc%d.example.com", i)
		}
		routes = append(routes, config.Route{Host: host, PathPrefix: "/v1", Credential: name})
		bindings[name] = &binding{key: cache.Key{Name: name}}
	}
	tbl := newTable(routes, bindings)
	b.ReportAllocs()
	for b.Loop() {
		if r, _ := tbl.match("api.svc999.example.com", "/v1/things", "GET", true); r == nil {
			b.Fatal("no match")
		}
	}
}
