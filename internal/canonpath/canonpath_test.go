package canonpath

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCanonical(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "/"},
		{"/", "/"},
		{"/v1", "/v1"},
		{"/v1/", "/v1/"},
		{"/v1/invoices?x=1", "/v1/invoices"},
		{"/v1?q=/../../admin", "/v1"}, // the query takes no part
		{"/v1/a;b=c/d", "/v1/a;b=c/d"},
		{"/v1/~user/a-b_c.d", "/v1/~user/a-b_c.d"},
		{"/a.b/..c/c..", "/a.b/..c/c.."}, // dots inside a name are a name
		{"//v1//x///", "/v1/x/"},         // merge_slashes
		{"//", "/"},
		{"/v%31/x", "/v1/x"}, // unreserved escapes decoded
		{"/%7Euser/%41%62", "/~user/Ab"},
		{"/a%3ab", "/a%3Ab"}, // reserved escapes kept, upper-case hex
		{"/a%2Eb", "/a.b"},
		{"/caf\u00e9", "/caf%C3%A9"}, // raw non-ASCII escaped as Envoy does
		{"/caf%c3%a9", "/caf%C3%A9"},
		{"/a b", "/a%20b"},
		{"/a|b<c>", "/a%7Cb%3Cc%3E"},
		{"/100%25", "/100%25"},
	} {
		got, ok := Canonical(tc.in)
		if !ok || got != tc.want {
			t.Errorf("Canonical(%q) = %q, %v; want %q", tc.in, got, ok, tc.want)
		}
	}
}

func TestCanonicalRefusesAmbiguousPaths(t *testing.T) {
	for _, in := range []string{
		// dot segments in any spelling
		"/v1/../admin", "/v1/./x", "/v1/..", "/v1/.", "/..", "/.", "/v1/...",
		"/v1/%2e%2e/admin", "/v1/%2E%2e/admin", "/v1/.%2e/admin", "/v1/%2e./admin", "/v1/%2e/x",
		"/v1//../admin", "/v1/.. /admin", "/v1/..%20/admin", "/v1/%20../x",
		// with path parameters
		"/v1/..;/admin", "/v1/..;x=y/admin", "/v1;x/..", "/v1/.;/x", "/v1/..%3b/admin", "/v1/%2e%2e;/admin",
		// encoded slash and backslash, raw backslash
		"/v1%2f..%2fadmin", "/v1%2F..%2Fadmin", "/v1/a%2fb", "/v1%5c..%5cadmin", "/v1/a%5Cb", "/v1\\..\\admin", "/v1/a\\b",
		// controls, raw or encoded
		"/v1/\x00", "/v1/%00", "/v1/a%0d%0aX: y", "/v1/\t", "/v1/%7f", "/v1/\x7f",
		// invalid escapes
		"/v1/%", "/v1/%4", "/v1/%zz", "/v1/%u002e%u002e/admin", "/v1/%G0",
		// escapes that decode to escapes
		"/v1/%252e%252e/admin", "/v1/%25%32%65%25%32%65/admin", "/v1%252fadmin", "/v1/%2541",
		// not UTF-8, raw or decoded; overlong encodings
		"/v1/\xff", "/v1/%ff", "/v1/%c0%ae%c0%ae/admin", "/v1/%c0%af", "/v1/%e0%80%ae",
		// fragments and other forms
		"/v1#/../admin", "*", "v1/x", "http://evil.example.com/v1", "?x",
	} {
		if got, ok := Canonical(in); ok {
			t.Errorf("Canonical(%q) = %q, want refused", in, got)
		}
	}
}

// TestCanonicalFastPathDoesNotAllocate: the hit path canonicalises every
// request's path; a path that is already canonical costs no allocation.
func TestCanonicalFastPathDoesNotAllocate(t *testing.T) {
	for _, p := range []string{"/", "/v1/invoices", "/v1/invoices?limit=10&after=/x"} {
		if n := testing.AllocsPerRun(100, func() { _, _ = Canonical(p) }); n != 0 {
			t.Errorf("%q: %v allocations", p, n)
		}
	}
}

// FuzzCanonical: the canonical form is itself canonical (idempotent), has no
// dot segment, encoded or doubled slash, backslash, control or invalid
// UTF-8, and the fast path agrees with the slow path.
func FuzzCanonical(f *testing.F) {
	for _, s := range []string{"/v1/../admin", "/v%31//x/", "/a%2fb", "/caf\u00e9?q", "/..;/x", "/%252e", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, ok := Canonical(in)
		if !ok {
			return
		}
		again, ok2 := Canonical(got)
		if !ok2 || again != got {
			t.Fatalf("Canonical(%q) = %q, but Canonical(%q) = %q, %v", in, got, got, again, ok2)
		}
		if !strings.HasPrefix(got, "/") || strings.Contains(got, "//") || strings.ContainsAny(got, "\\#?") || !utf8.ValidString(got) {
			t.Fatalf("Canonical(%q) = %q", in, got)
		}
		for _, seg := range strings.Split(got, "/") {
			if seg != "" && dotsOnly(seg) {
				t.Fatalf("Canonical(%q) = %q keeps a dot segment", in, got)
			}
		}
		if s, ok := slow(got); !ok || s != got {
			t.Fatalf("slow(%q) = %q, %v", got, s, ok)
		}
		for _, c := range []byte(got) {
			if c < 0x20 || c >= 0x7f {
				t.Fatalf("Canonical(%q) = %q holds byte %#x", in, got, c)
			}
		}
		lower := strings.ToLower(got)
		for _, bad := range []string{"%2f", "%5c", "%00", "%2e"} {
			if strings.Contains(lower, bad) {
				t.Fatalf("Canonical(%q) = %q holds %s", in, got, bad)
			}
		}
		if doubled.MatchString(lower) {
			t.Fatalf("Canonical(%q) = %q holds an encoded escape", in, got)
		}
	})
}

var doubled = regexp.MustCompile(`%25[0-9a-f]{2}`)

func BenchmarkCanonical(b *testing.B) {
	for _, p := range []string{"/v1/invoices?limit=10", "/v%31//invoices/caf%c3%a9"} {
		b.Run(p, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = Canonical(p)
			}
		})
	}
}
