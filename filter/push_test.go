package filter

import (
	"fmt"
	"testing"
	"unsafe"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
)

// TestAllowsAnyIsTheUnionOfAllowedSources: AllowsAny answers what asking
// every credential's Allows would, for exact and wildcard principals, IPv4
// and IPv6 prefixes of several lengths, and a credential open to everyone.
func TestAllowsAnyIsTheUnionOfAllowedSources(t *testing.T) {
	scoped := `credentials:
  a: {type: static, value: va, allowed_sources: ['spiffe://td/ns/a/sa/*', '10.1.0.0/16']}
  b: {type: static, value: vb, allowed_sources: ['spiffe://td/ns/b/sa/api', '192.168.7.9', 'fd00:1:2:3::/64']}
  c: {type: static, value: vc, allowed_sources: ['spiffe://td/ns/a/sa/*', '10.1.2.0/24', '2001:db8::/32']}
`
	callers := []struct {
		principal, address string
		want               bool
	}{
		{"spiffe://td/ns/a/sa/x", "", true},
		{"spiffe://td/ns/a/sa/x/y", "", false},
		{"spiffe://td/ns/b/sa/api", "", true},
		{"spiffe://td/ns/b/sa/other", "", false},
		{"", "10.1.200.3", true},
		{"", "10.2.0.1", false},
		{"", "192.168.7.9", true},
		{"", "::ffff:192.168.7.9", true},
		{"", "192.168.7.10", false},
		{"", "fd00:1:2:3:ffff::1", true},
		{"", "fd00:1:2:4::1", false},
		{"", "2001:db8:ffff::1", true},
		{"", "2001:db9::1", false},
		{"", "::1", false},
		{"", "not-an-ip", false},
		{"", "", false},
		{"spiffe://td/ns/web/sa/x", "10.1.0.1", true}, // the address alone suffices
	}
	f := staticCredentials(t, scoped)
	for _, c := range callers {
		var brute bool
		for name := range f.bindings {
			p, _ := f.PushCredential(name)
			brute = brute || p.Allows(c.principal, c.address)
		}
		if brute != c.want {
			t.Fatalf("test case %+v: the credentials' Allows says %v", c, brute)
		}
		if got := f.AllowsAny(c.principal, c.address); got != c.want {
			t.Errorf("AllowsAny(%q, %q) = %v, want %v", c.principal, c.address, got, c.want)
		}
	}

	open := staticCredentials(t, scoped+"  d: {type: static, value: vd}\n")
	if !open.AllowsAny("", "") || !open.AllowsAny("", "203.0.113.1") {
		t.Error("a credential without allowed_sources allows everyone")
	}
	if none := staticCredentials(t, "credentials: {}\n"); none.AllowsAny("spiffe://td/ns/a/sa/x", "10.1.0.1") {
		t.Error("no credentials: nobody may have one")
	}
}

// BenchmarkAllowsAny: the check a stream's open costs with 10,000
// credentials each allowing its own /32 and SPIFFE ID.
func BenchmarkAllowsAny(b *testing.B) {
	yaml := "credentials:\n"
	for i := range 10000 {
		yaml += fmt.Sprintf("  c%d: {type: static, value: v, allowed_sources: ['spiffe://td/ns/n%d/sa/*', '10.%d.%d.1']}\n", i, i, i/256, i%256)
	}
	f := staticCredentials(b, yaml)
	f.AllowsAny("", "")
	b.ReportAllocs()
	for b.Loop() {
		if f.AllowsAny("", "192.168.0.1") || !f.AllowsAny("", "10.39.15.1") {
			b.Fatal("wrong answer")
		}
	}
}

// staticCredentials compiles a configuration of static credentials.
func staticCredentials(t testing.TB, yaml string) *Filter {
	t.Helper()
	cfg, err := config.Parse("t.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	sources := map[string]credential.Source{}
	for name, c := range cfg.Credentials {
		if sources[name], err = credential.NewStatic(c); err != nil {
			t.Fatal(err)
		}
	}
	f, err := New(cfg, sources, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestKeys: Key and Keys give each credential's cache key as Decide uses it
// (the identity of its configuration, its name, static values local), the
// only record of a credential the assembly keeps beside the filter.
func TestKeys(t *testing.T) {
	yaml := "credentials:\n  a: {type: static, value: va}\n  b: {type: static, value: vb}\n"
	cfg, err := config.Parse("t.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	f := staticCredentials(t, yaml)
	seen := map[string]bool{}
	for k := range f.Keys() {
		want := cfg.Credentials[k.Name]
		if want == nil || k.ID != want.Identity() || !k.Local {
			t.Errorf("key %+v: not credential %q's identity, or not local", k, k.Name)
		}
		if got, ok := f.Key(k.Name); !ok || got != k {
			t.Errorf("Key(%q) = %+v, %v; Keys gave %+v", k.Name, got, ok, k)
		}
		seen[k.Name] = true
	}
	if len(seen) != 2 {
		t.Errorf("Keys gave %v, want a and b", seen)
	}
	if _, ok := f.Key("c"); ok {
		t.Error("Key of a credential not configured")
	}
}

// TestBindingsShareFormats: credentials with the same header and format
// share one copy of it, and a binding stays in the 112-byte size class
// (100,000 credentials: every 16 bytes here is 1.6 MB).
func TestBindingsShareFormats(t *testing.T) {
	f := staticCredentials(t, `credentials:
  a: {type: static, value: va}
  b: {type: static, value: vb}
  c: {type: static, value: vc, header: X-Api-Key, format: "{token}"}
`)
	a, b, c := f.bindings["a"], f.bindings["b"], f.bindings["c"]
	if a.format != b.format {
		t.Error("a and b have the same header and format but not one copy")
	}
	if c.format == a.format || c.header != "x-api-key" || c.prefix != "" || a.header != "authorization" || a.prefix != "Bearer " {
		t.Errorf("formats: a %+v, c %+v", *a.format, *c.format)
	}
	if n := unsafe.Sizeof(binding{}); n > 112 {
		t.Errorf("binding is %d bytes, over the 112-byte size class", n)
	}
}
