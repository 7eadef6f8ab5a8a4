package status

import (
	"slices"
	"testing"

	"github.com/tokenbroker/tokenbroker/config"
)

// Each credential's routes come back in file order, however the
// credentials interleave in the file.
func TestRouteIndex(t *testing.T) {
	x := newRouteIndex([]config.Route{
		{Host: "b.example.com", Credential: "b"},
		{Host: "a.example.com", PathPrefix: "/v1", Methods: []string{"GET", "POST"}, Credential: "a"},
		{Host: "c.example.com", Credential: "c"},
		{Host: "a2.example.com", Credential: "a"},
	})
	for cred, want := range map[string][]string{
		"a":    {"a.example.com/v1 GET,POST", "a2.example.com"},
		"b":    {"b.example.com"},
		"c":    {"c.example.com"},
		"none": nil,
	} {
		if got := x.of(cred); !slices.Equal(got, want) {
			t.Errorf("routes of %q: %q, want %q", cred, got, want)
		}
	}
	var none *routeIndex
	if got := none.of("a"); got != nil {
		t.Errorf("no index: %q", got)
	}
}
