package filter

import (
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
)

// TestExplainAgreesWithMatch: for every request, the first route Explain
// says takes it is the route the table picks, and every route it lists
// before that one has a reason.
func TestExplainAgreesWithMatch(t *testing.T) {
	routes := []config.Route{
		{Host: "billing.example.com", PathPrefix: "/v1", Methods: []string{"GET", "POST"}, Credential: "billing-v1"},
		{Host: "billing.example.com", PathPrefix: "/v2/", Credential: "billing-v2"},
		{Host: "*.example.com", PathPrefix: "/api", Credential: "wild"},
		{Host: "*.eu.example.com", Credential: "wild-eu"},
		{Host: "*.billing.example.com", Credential: "billing-sub"},
		{Host: "api.eu.example.com", PathPrefix: "/admin/", Credential: "admin"},
	}
	bindings := map[string]*binding{}
	for _, r := range routes {
		bindings[r.Credential] = &binding{key: cache.Key{Name: r.Credential}}
	}
	tbl := newTable(routes, bindings)
	hosts := []string{"billing.example.com", "BILLING.example.com:443", "x.billing.example.com", "orders.example.com", "example.com", "api.eu.example.com", "x.eu.example.com", "evil.net", ""}
	paths := []string{"/", "/v1", "/v1/x", "/v10", "/v2", "/v2/x", "/api", "/api/x", "/admin", "/admin/x"}
	for _, host := range hosts {
		for _, path := range paths {
			for _, method := range []string{"GET", "DELETE"} {
				want := ""
				if rt, _ := tbl.match(host, path, method, true); rt != nil {
					want = rt.binding.key.Name
				}
				got := ""
				for _, v := range Explain(routes, host, path, method) {
					if v.Why == "" {
						got = v.Route.Credential
						break
					}
				}
				if got != want {
					t.Errorf("%s %s%s: Explain picks %q, match picks %q", method, host, path, got, want)
				}
			}
		}
	}
}

func TestExplainReasons(t *testing.T) {
	routes := []config.Route{
		{Host: "orders.example.com", PathPrefix: "/v1", Credential: "orders"},
		{Host: "orders.example.com", Methods: []string{"POST"}, Credential: "orders-post"},
		{Host: "*.orders.example.com", Credential: "orders"},
		{Host: "other.example.com", Credential: "other"},
	}
	got := Explain(routes, "orders.example.com", "/", "GET")
	if len(got) != 3 {
		t.Fatalf("want the two exact routes and the apex wildcard, got %+v", got)
	}
	for i, want := range []string{"path / is outside path_prefix /v1", "method GET is not one of POST", "never orders.example.com itself"} {
		if !strings.Contains(got[i].Why, want) {
			t.Errorf("verdict %d: %q, want it to say %q", i, got[i].Why, want)
		}
	}
	if got := Explain(routes, "nothing.example.net", "/", "GET"); len(got) != 0 {
		t.Errorf("routes for an unknown host: %+v", got)
	}
}
