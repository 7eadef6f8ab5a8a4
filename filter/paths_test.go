package filter

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
)

// staticFilter compiles routesYAML with one static credential per name in
// creds; each credential's value is "key-NAME" (read from its own value
// file, so every credential has its own cache identity).
func staticFilter(t testing.TB, defaultAction, routesYAML string, creds ...string) *Filter {
	t.Helper()
	dir := t.TempDir()
	var b strings.Builder
	b.WriteString("default_action: " + defaultAction + "\ncredentials:\n")
	for _, c := range creds {
		file := filepath.Join(dir, c)
		if err := os.WriteFile(file, []byte("key-"+c), 0o600); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "  %s: {type: static, value_file: %s, header: X-Api-Key, format: '{token}'}\n", c, file)
	}
	b.WriteString(routesYAML)
	cfg, err := config.Parse("paths.yaml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := cache.New(cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tokens.Close)
	sources := map[string]credential.Source{}
	for name, c := range cfg.Credentials {
		s, err := credential.NewStatic(c)
		if err != nil {
			t.Fatal(err)
		}
		sources[name] = s
	}
	f, err := New(cfg, sources, tokens, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

const pathRoutes = `routes:
  - {host: api.example.com, path_prefix: /v1, credential: v1}
  - {host: "*.example.org", path_prefix: /v1, credential: v1}
`

// TestAmbiguousPathsNeverGetACredential: under deny and under allow, a path
// whose meaning depends on who decodes it is denied with a reason when a
// credential is at stake, and never carries one.
func TestAmbiguousPathsNeverGetACredential(t *testing.T) {
	ambiguous := []string{
		"/v1/../admin", "/v1/%2e%2e/admin", "/v1/%2E%2e/admin", "/v1/.%2e/admin", "/v1/..;/admin",
		"/v1;x/../admin", "/v1/./x", "/v1%2f..%2fadmin", "/v1%5c..%5cadmin", "/v1\\..\\admin",
		"/v1/%00", "/v1/%zz", "/v1/%252e%252e/admin", "/v1/%c0%ae%c0%ae/admin", "/v1#/../admin",
	}
	for _, action := range []string{"deny", "allow"} {
		f := staticFilter(t, action, pathRoutes, "v1")
		for _, host := range []string{"api.example.com", "x.example.org:8443"} {
			for _, p := range ambiguous {
				d := f.Decide(context.Background(), &Request{Host: host, Path: p, Method: "GET"})
				if d.Allowed || d.Status != 403 || d.Reason != ReasonAmbiguousPath || d.Header.Value != "" {
					t.Errorf("%s %s%s: %+v", action, host, p, d)
				}
			}
		}
		// Named by context_extensions: the same.
		d := f.Decide(context.Background(), &Request{Host: "other.example.net", Path: "/x/../y", Credential: "v1"})
		if d.Allowed || d.Reason != ReasonAmbiguousPath {
			t.Errorf("%s, context extension: %+v", action, d)
		}
		// A host no route names: default_action, and never a credential.
		d = f.Decide(context.Background(), &Request{Host: "other.example.net", Path: "/v1/../admin", Method: "GET"})
		if d.Header.Value != "" || d.Allowed != (action == "allow") {
			t.Errorf("%s, unrouted host: %+v", action, d)
		}
		// Canonical spellings of /v1 still get it.
		for _, p := range []string{"/v1", "/v1/x?y=/../z", "//v1//x", "/v%31/x", "/v1/a%2Eb"} {
			d := f.Decide(context.Background(), &Request{Host: "api.example.com", Path: p, Method: "GET"})
			if !d.Allowed || d.Header.Value != "key-v1" {
				t.Errorf("%s %s: %+v", action, p, d)
			}
		}
	}
}

// TestRequestBounds: each bound is hit, and answered with a 403 and a
// reason, before any route is looked at.
func TestRequestBounds(t *testing.T) {
	f := staticFilter(t, "allow", pathRoutes, "v1")
	var probes int
	probed = func(string) { probes++ }
	defer func() { probed = nil }()
	for _, tc := range []struct {
		r      Request
		reason string
	}{
		{Request{Host: strings.Repeat("a.", 128) + "com", Path: "/v1"}, ReasonHostTooLong}, // 259 bytes
		{Request{Host: "api.example.com", Path: "/v1/" + strings.Repeat("x", MaxPathBytes)}, ReasonPathTooLong},
		{Request{Host: "api.example.com", Path: "/v1", Invalid: "invalid UTF-8"}, "invalid UTF-8"},
	} {
		d := f.Decide(context.Background(), &tc.r)
		if d.Allowed || d.Status != 403 || d.Reason != tc.reason {
			t.Errorf("%s: %+v", tc.reason, d)
		}
	}
	if probes != 0 {
		t.Fatalf("refused requests probed the route table %d times", probes)
	}
	// At the bounds: accepted.
	host := strings.Repeat("a", MaxHostBytes-len(".example.org")) + ".example.org"
	if d := f.Decide(context.Background(), &Request{Host: host, Path: "/v1/" + strings.Repeat("x", MaxPathBytes-4)}); !d.Allowed || d.Header.Value != "key-v1" {
		t.Fatalf("at the bounds: %+v", d)
	}
}

// manyWildcards has more than 8 wildcard routes (Go maps of up to 8 entries
// skip hashing, which hid the quadratic cost) with suffixes of 2-4 labels.
func manyWildcards() (routes []config.Route, bindings map[string]*binding) {
	bindings = map[string]*binding{}
	for i := range 16 {
		name := fmt.Sprintf("c%d", i)
		host := fmt.Sprintf("*.svc%d.example.com", i)
		if i%4 == 0 {
			host = fmt.Sprintf("*.eu.svc%d.example.com", i)
		}
		routes = append(routes, config.Route{Host: host, Credential: name})
		bindings[name] = &binding{key: cache.Key{Name: name}}
	}
	return routes, bindings
}

// TestWildcardWorkIndependentOfHostSize: the route table looks up a bounded
// number of keys of bounded length whatever the host, and a huge host is
// refused without any lookup. Work is counted, not timed.
func TestWildcardWorkIndependentOfHostSize(t *testing.T) {
	tbl := newTable(manyWildcards())
	var keys, bytes int
	probed = func(k string) { keys++; bytes += len(k) }
	defer func() { probed = nil }()

	work := func(host string) (int, int) {
		keys, bytes = 0, 0
		tbl.match(host, "/", "GET", true)
		return keys, bytes
	}
	// A host of many labels under the bound: 1 exact probe + at most
	// maxLabels (4) wildcard probes, each at most the host's length.
	many := strings.Repeat("a.", 120) + "nomatch" // 247 bytes, 121 labels
	k, b := work(many)
	if tbl.maxLabels != 4 || k > 1+tbl.maxLabels || b > 2*len(many) {
		t.Fatalf("%d labels: %d lookups, %d bytes hashed (maxLabels %d)", strings.Count(many, ".")+1, k, b, tbl.maxLabels)
	}
	// 1 MB of labels: no lookup at all.
	huge := strings.Repeat("a.", 1<<19) + "svc1.example.com"
	if k, b := work(huge); k != 0 || b != 0 {
		t.Fatalf("1 MB host: %d lookups, %d bytes", k, b)
	}
	// Still correct for ordinary hosts.
	if r, _ := tbl.match("x.y.svc1.example.com", "/", "GET", true); r == nil || r.binding.key.Name != "c1" {
		t.Fatal("wildcard no longer matches")
	}
	if r, _ := tbl.match("a.eu.svc4.example.com", "/", "GET", true); r == nil || r.binding.key.Name != "c4" {
		t.Fatal("4-label wildcard no longer matches")
	}
}

// BenchmarkWildcardMatchHostSize: the cost of a miss against 16 wildcard
// routes for hosts of growing size; flat (hosts over MaxHostBytes are
// refused before any lookup).
func BenchmarkWildcardMatchHostSize(b *testing.B) {
	tbl := newTable(manyWildcards())
	for _, n := range []int{16, 64, 250, 4 << 10, 1 << 20} {
		host := strings.Repeat("a.", n/2)[:n-len("nomatch")] + "nomatch"
		b.Run(fmt.Sprintf("host=%dB", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tbl.match(host, "/", "GET", true)
			}
		})
	}
}
