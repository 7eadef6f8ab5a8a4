package config

import (
	"fmt"
	"strings"
	"testing"
)

// TestStreamedParseMatchesWhole: a file of several slices' worth of
// credentials and routes, with problems in later slices, gives the same
// configuration and the same FILE:LINE errors whether its big sections are
// parsed in slices or whole.
func TestStreamedParseMatchesWhole(t *testing.T) {
	n := 2*entriesPerSlice + 500
	var good, bad strings.Builder
	for _, b := range []*strings.Builder{&good, &bad} {
		b.WriteString("listen: {grpc: '127.0.0.1:0', admin: ''}\n# the credentials\ncredentials:\n")
	}
	for i := range n {
		fmt.Fprintf(&good, "  c%d:\n    token_url: https://idp.example.com/t\n    client_id: client-%d\n    client_secret: s-%d\n    scopes: [a, b]\n", i, i, i)
		switch i {
		case 5, entriesPerSlice + 7:
			fmt.Fprintf(&bad, "  c%d:\n    token_url: not a url\n    client_id: client-%d\n    client_secret: s-%d\n", i, i, i)
		case 2*entriesPerSlice + 3:
			fmt.Fprintf(&bad, "  c%d:\n    token_url: https://idp.example.com/t\n    client_id: client-%d\n    client_secret: s-%d\n    timeout: soon\n", i, i, i)
		case 2*entriesPerSlice + 4:
			fmt.Fprintf(&bad, "  c%d:\n    token_url: https://idp.example.com/t\n    client_id: client-%d\n", i, i) // no secret
		default:
			fmt.Fprintf(&bad, "  c%d:\n    token_url: https://idp.example.com/t\n    client_id: client-%d\n    client_secret: s-%d\n", i, i, i)
		}
	}
	for _, b := range []*strings.Builder{&good, &bad} {
		b.WriteString("routes:\n")
	}
	for i := range n {
		fmt.Fprintf(&good, "  - host: svc%d.example.com\n    credential: c%d\n    methods: [get]\n", i, i)
		switch i {
		case entriesPerSlice + 1:
			fmt.Fprintf(&bad, "  - host: svc%d.example.com\n    credential: nope\n", i)
		case 2 * entriesPerSlice:
			fmt.Fprintf(&bad, "  - {host: 'bad host', credential: c%d, unknown: 1}\n", i)
		default:
			fmt.Fprintf(&bad, "  - host: svc%d.example.com\n    credential: c%d\n", i, i)
		}
	}
	good.WriteString("cache: {max_tokens: 5000}\n")
	bad.WriteString("credentials:\n  again: {type: static, value: v}\n") // a duplicate section: parsed whole

	slices := map[string]int{}
	sliceParsed = func(s string) { slices[s]++ }
	defer func() { sliceParsed = nil }()
	cfg, err := Parse("tb.yaml", []byte(good.String()))
	if err != nil {
		t.Fatal(err)
	}
	if slices["credentials"] != 3 || slices["routes"] != 3 {
		t.Errorf("slices parsed: %v, want 3 of each (streamed, not the whole-file fallback)", slices)
	}
	if len(cfg.Credentials) != n || len(cfg.Routes) != n || cfg.Cache.MaxTokens != 5000 || cfg.Routes[n-1].Methods[0] != "GET" {
		t.Fatalf("streamed parse lost entries: %d credentials, %d routes, %+v", len(cfg.Credentials), len(cfg.Routes), cfg.Cache)
	}
	if want := 4 + 5*n + 1 + 3*(n-1); cfg.Routes[n-1].Line != want {
		t.Errorf("last route on line %d, want %d", cfg.Routes[n-1].Line, want)
	}
	sameAsWhole(t, "tb.yaml", []byte(good.String()), cfg, err)

	// Problems in later slices, reported at their own lines.
	badText := strings.TrimSuffix(bad.String(), "credentials:\n  again: {type: static, value: v}\n")
	cfg, err = Parse("tb.yaml", []byte(badText))
	if err == nil {
		t.Fatal("bad file accepted")
	}
	for _, want := range []string{
		fmt.Sprintf("credentials.c%d.token_url: not an absolute http(s) URL", entriesPerSlice+7),
		fmt.Sprintf("credentials.c%d.timeout: must be a duration", 2*entriesPerSlice+3),
		fmt.Sprintf("routes[%d].credential: credential \"nope\" is not defined", entriesPerSlice+1),
		fmt.Sprintf("routes[%d].unknown: unknown field", 2*entriesPerSlice),
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%.2000s", want, err)
		}
	}
	sameAsWhole(t, "tb.yaml", []byte(badText), cfg, err)
	cfg, err = Parse("tb.yaml", []byte(bad.String()))
	sameAsWhole(t, "tb.yaml", []byte(bad.String()), cfg, err)
	if err == nil || !strings.Contains(err.Error(), "duplicate key") {
		t.Errorf("duplicate section: %.300v", err)
	}
}

// TestStreamedParseExplicitKeyAtSliceEdge: an explicit key ("? k" then
// ": value") must not be parted from its value where a slice ends.
func TestStreamedParseExplicitKeyAtSliceEdge(t *testing.T) {
	var b strings.Builder
	b.WriteString("credentials:\n")
	for i := range entriesPerSlice {
		fmt.Fprintf(&b, "  c%d: {type: static, value: v}\n", i)
	}
	b.WriteString("  ? last\n  : {type: static, value: v}\n")
	cfg, err := Parse("tb.yaml", []byte(b.String()))
	if err != nil || cfg.Credentials["last"] == nil || cfg.Credentials["last"].Value != "v" {
		t.Fatalf("explicit key at the edge of a slice: %v", err)
	}
	sameAsWhole(t, "tb.yaml", []byte(b.String()), cfg, err)
}
