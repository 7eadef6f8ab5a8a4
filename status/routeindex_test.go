package status

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
)

// Each credential's routes come back as host[path_prefix] [methods], in file
// order, however the credentials interleave in the file; a route naming a
// credential the page does not list is left out.
func TestRouteTexts(t *testing.T) {
	names := []string{"a", "b", "c", "d"}
	x := newRouteTexts(names, []config.Route{
		{Host: "b.example.com", Credential: "b"},
		{Host: "a.example.com", PathPrefix: "/v1", Methods: []string{"GET", "POST"}, Credential: "a"},
		{Host: "c.example.com", Credential: "c"},
		{Host: "gone.example.com", Credential: "gone"},
		{Host: "a2.example.com", Credential: "a"},
		{Host: "*.a3.example.com", PathPrefix: "/x", Credential: "a"},
	})
	want := map[string][]string{
		"a": {"a.example.com/v1 GET,POST", "a2.example.com", "*.a3.example.com/x"},
		"b": {"b.example.com"},
		"c": {"c.example.com"},
		"d": nil,
	}
	for i, name := range names {
		if got := x.of(i, name); !slices.Equal(got, want[name]) {
			t.Errorf("routes of %q: %q, want %q", name, got, want[name])
		}
	}
	// The credentials that stay keep their routes when the names change.
	to := []string{"0", "a", "c", "e"}
	y := x.realign(names, to)
	for i, w := range [][]string{nil, want["a"], want["c"], nil} {
		if got := y.of(i, to[i]); !slices.Equal(got, w) {
			t.Errorf("realigned, routes of %q: %q, want %q", to[i], got, w)
		}
	}
	if _, ok := y.more["b"]; ok || len(y.more) != 1 {
		t.Errorf("realigned, later routes kept for %v", y.more)
	}
	var none routeTexts
	if got := none.of(0, "a"); got != nil {
		t.Errorf("no routes set: %q", got)
	}
	if got := none.realign(names, to); got.first != nil {
		t.Errorf("no routes set, realigned: %q", got.first)
	}
}

// The page shows each credential's routes as before, in the HTML and the
// JSON, on every page of rows; a credential that a reload keeps keeps them
// until the new routes are set, and the new ones replace them.
func TestPageShowsRoutes(t *testing.T) {
	clk := &clock{t: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	tokens, err := cache.New(cache.Options{Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	defer tokens.Close()
	creds := map[string]*config.Credential{}
	var routes []config.Route
	for i := range MaxRows + 10 {
		name := fmt.Sprintf("c%03d", i)
		creds[name] = &config.Credential{}
		routes = append(routes, config.Route{Host: name + ".example.com", Credential: name})
	}
	routes = append(routes, config.Route{Host: "api.example.com", PathPrefix: "/v2", Methods: []string{"GET"}, Credential: "c205"})
	p := New(tokens, nil, nil, creds, nil)
	p.SetRoutes(routes)
	rowsOf := func(d Data) map[string][]string {
		out := map[string][]string{}
		for _, r := range d.Rows {
			out[r.Name] = r.Routes
		}
		return out
	}
	first, second := rowsOf(p.DataPage(1)), rowsOf(p.DataPage(2))
	if got := first["c000"]; !slices.Equal(got, []string{"c000.example.com"}) {
		t.Errorf("c000 routes %q", got)
	}
	if got := second["c205"]; !slices.Equal(got, []string{"c205.example.com", "api.example.com/v2 GET"}) {
		t.Errorf("c205 routes %q", got)
	}
	if !strings.Contains(served(p.ServeHTML, "/status?page=2"), "<div>api.example.com/v2 GET</div>") {
		t.Error("the page does not show c205's second route")
	}
	if !strings.Contains(served(p.ServeJSON, "/status.json?page=2"), `"c205.example.com",`) {
		t.Error("status.json does not show c205's routes")
	}

	// A reload: c000 stays, c001 goes, n is new.
	delete(creds, "c001")
	creds["n"] = &config.Credential{}
	p.SetCredentials(creds, nil)
	rows := rowsOf(p.DataPage(1))
	if got := rows["c000"]; !slices.Equal(got, []string{"c000.example.com"}) {
		t.Errorf("after SetCredentials, c000 routes %q", got)
	}
	if _, ok := rows["c001"]; ok {
		t.Error("c001 still listed")
	}
	p.SetRoutes([]config.Route{{Host: "new.example.com", Credential: "c000"}, {Host: "n.example.com", Credential: "n"}})
	rows = rowsOf(p.DataPage(1))
	if got := rows["c000"]; !slices.Equal(got, []string{"new.example.com"}) {
		t.Errorf("after SetRoutes, c000 routes %q", got)
	}
	if got := rowsOf(p.DataPage(2))["n"]; !slices.Equal(got, []string{"n.example.com"}) {
		t.Errorf("after SetRoutes, n routes %q", got)
	}
	if got := rows["c002"]; got != nil {
		t.Errorf("after SetRoutes, c002 routes %q", got)
	}
}

// A route costs the page one string header, nothing for its credential's
// name (32 bytes a route before).
func TestRouteTextsSize(t *testing.T) {
	names := make([]string, 1000)
	routes := make([]config.Route, len(names))
	for i := range names {
		names[i] = fmt.Sprintf("c%04d", i)
		routes[i] = config.Route{Host: names[i] + ".example.com", Credential: names[i]}
	}
	x := newRouteTexts(names, routes)
	if got := uintptr(cap(x.first)) * unsafe.Sizeof(""); got > 16*uintptr(len(routes)) || x.more != nil {
		t.Errorf("%d bytes for %d routes of one credential each (more: %v)", got, len(routes), x.more)
	}
	if x.first[7] != routes[7].Host || unsafe.StringData(x.first[7]) != unsafe.StringData(routes[7].Host) {
		t.Error("a host-only route's text is not the configuration's host string")
	}
}
