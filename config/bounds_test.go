package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// numericBound is one numeric setting: the values at its edges are
// accepted, the first values beyond them are refused.
type numericBound struct {
	field string   // as numericFields names it: credentials.*.timeout, broker.upstreams[].limit.per
	yaml  string   // a configuration with %s where the value goes
	ok    []string // the edges (and the default, where it is one)
	bad   []string // just outside
}

func numericBounds(t *testing.T) []numericBound {
	keys := writeFile(t, "keys", testKey(1)+"\n")
	// A credential that needs nothing else; expiry_margin 0 lets the
	// default_lifetime edges stand on their own.
	cred := "cache: {expiry_margin: 0s}\ncredentials:\n  a:\n    token_url: https://i/t\n    client_id: a\n    client_secret: b\n"
	up := "cache: {expiry_margin: 0s}\nbroker:\n  upstreams:\n    - token_url: https://i/t\n      "
	redis := "cache:\n  redis:\n    addrs: [127.0.0.1:6379]\n    encryption_keys_file: " + keys + "\n    "
	return []numericBound{
		{"cache.max_tokens", "cache: {max_tokens: %s}\n", []string{"1", "1000000"}, []string{"0", "-1", "1000001", "1000000000000"}},
		{"cache.expiry_margin", "cache: {expiry_margin: %s}\n", []string{"0s", "1h"}, []string{"-1ns", "1h0m0.001s"}},
		{"cache.refresh_ahead", "cache: {refresh_ahead: %s}\n", []string{"0.01", "0.9"}, []string{"0.0099", "0.91", "0", "1", "NaN", "Inf"}},
		{"cache.redis.db", redis + "db: %s\n", []string{"0", "65535"}, []string{"-1", "65536"}},
		{"cache.redis.timeout", redis + "timeout: %s\n", []string{"1ms", "10s"}, []string{"999us", "1ns", "10.001s"}},
		{"cache.redis.lock_ttl", redis + "lock_ttl: %s\n", []string{"100ms", "5m"}, []string{"99ms", "5m0.001s"}},
		{"credentials.*.timeout", cred + "    timeout: %s\n", []string{"100ms", "5m"}, []string{"99ms", "1ns", "0s", "5m1s"}},
		{"credentials.*.default_lifetime", cred + "    default_lifetime: %s\n", []string{"10s", "24h"}, []string{"9s", "24h0m1s"}},
		{"credentials.*.budget.mints", cred + "    budget: {mints: %s}\n", []string{"0", "1000000000"}, []string{"-1", "1000000001"}},
		{"credentials.*.budget.per", cred + "    budget: {per: %s}\n", []string{"1m", "8760h"}, []string{"59s", "8760h0m1s"}},
		{"credentials.*.cost_per_mint", cred + "    cost_per_mint: %s\n", []string{"0", "1000"}, []string{"-0.001", "1000.01", "Inf", "NaN"}},
		{"shutdown.delay", "shutdown: {delay: %s}\n", []string{"0s", "5m"}, []string{"-1s", "5m1s"}},
		{"shutdown.drain", "shutdown: {drain: %s}\n", []string{"0s", "5m"}, []string{"-1s", "5m1s", "10h"}},
		{"broker.negative_ttl", "broker: {negative_ttl: %s}\n", []string{"0s", "5m"}, []string{"-1s", "5m1s"}},
		{"broker.upstreams[].timeout", up + "timeout: %s\n", []string{"100ms", "5m"}, []string{"99ms", "5m1s"}},
		{"broker.upstreams[].default_lifetime", up + "default_lifetime: %s\n", []string{"10s", "24h"}, []string{"9s", "24h0m1s"}},
		{"broker.upstreams[].cost_per_mint", up + "cost_per_mint: %s\n", []string{"0", "1000"}, []string{"-1", "1001", "Inf"}},
		{"broker.upstreams[].limit.mints", up + "limit: {mints: %s, per: 1s}\n", []string{"0", "1000000"}, []string{"-1", "1000001"}},
		{"broker.upstreams[].limit.per", up + "limit: {mints: 1, per: %s}\n", []string{"1s", "24h"}, []string{"999ms", "0s", "24h0m1s"}},
		{"broker.upstreams[].budget.mints", up + "budget: {mints: %s}\n", []string{"0", "1000000000"}, []string{"-1", "1000000001"}},
		{"broker.upstreams[].budget.per", up + "budget: {per: %s}\n", []string{"1m", "8760h"}, []string{"59s", "8760h0m1s"}},
	}
}

// TestNumericBounds hits both edges of every numeric setting: the edge is
// accepted, the first value past it refused as FILE:LINE: field: problem.
func TestNumericBounds(t *testing.T) {
	for _, b := range numericBounds(t) {
		field := strings.NewReplacer("*", "a", "[]", "[0]").Replace(b.field)
		for _, v := range b.ok {
			if _, err := Parse("tb.yaml", fmt.Appendf(nil, b.yaml, v)); err != nil {
				t.Errorf("%s: %s refused: %v", b.field, v, err)
			}
		}
		for _, v := range b.bad {
			_, err := Parse("tb.yaml", fmt.Appendf(nil, b.yaml, v))
			want := ": " + field + ": must be between "
			if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "tb.yaml:") {
				t.Errorf("%s: %s gave %v, want tb.yaml:LINE%s…", b.field, v, err, want)
			}
		}
	}
}

// TestEveryNumericSettingHasABound fails when a numeric setting is added to
// Config without a range in numericBounds (and so, presumably, in validate).
func TestEveryNumericSettingHasABound(t *testing.T) {
	var tested []string
	for _, b := range numericBounds(t) {
		tested = append(tested, b.field)
	}
	for _, f := range numericFields(reflect.TypeFor[Config](), "") {
		if !slices.Contains(tested, f) {
			t.Errorf("numeric setting %s has no range in numericBounds", f)
		}
	}
}

// numericFields lists the yaml paths of the integer, float and duration
// settings under t: map elements as *, list elements as [].
func numericFields(t reflect.Type, path string) []string {
	switch t.Kind() {
	case reflect.Pointer:
		return numericFields(t.Elem(), path)
	case reflect.Map:
		return numericFields(t.Elem(), path+".*")
	case reflect.Slice:
		return numericFields(t.Elem(), path+"[]")
	case reflect.Struct:
		var out []string
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			out = append(out, numericFields(f.Type, strings.TrimPrefix(path+"."+name, "."))...)
		}
		return out
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return []string{path}
	}
	return nil
}

// TestDefaultLifetimeExceedsMargin: a default lifetime within the expiry
// margin would make every token of that lifetime unusable on arrival.
func TestDefaultLifetimeExceedsMargin(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"cache: {expiry_margin: 30s}\ncredentials:\n  a: {token_url: https://i/t, client_id: a, client_secret: b, default_lifetime: 30s}\n",
			"tb.yaml:3: credentials.a.default_lifetime: must be longer than cache.expiry_margin (30s)"},
		{"cache: {expiry_margin: 5m}\nbroker:\n  upstreams:\n    - {token_url: https://i/t, default_lifetime: 1m}\n",
			"tb.yaml:4: broker.upstreams[0].default_lifetime: must be longer than cache.expiry_margin (5m)"},
	} {
		if _, err := Parse("tb.yaml", []byte(tc.yaml)); err == nil || err.Error() != tc.want {
			t.Errorf("got %v\nwant %s", err, tc.want)
		}
	}
	ok := "cache: {expiry_margin: 30s}\ncredentials:\n  a: {token_url: https://i/t, client_id: a, client_secret: b, default_lifetime: 31s}\n"
	if _, err := Parse("tb.yaml", []byte(ok)); err != nil {
		t.Error(err)
	}
}

// TestSizeAndCountBounds hits every size and count bound, each just past it
// and just within it.
func TestSizeAndCountBounds(t *testing.T) {
	static := func(value, format string) string {
		return "credentials:\n  k:\n    type: static\n    value: " + value + "\n    format: '" + format + "'\n"
	}
	entries := func(head, item string, n int) string {
		var b strings.Builder
		b.WriteString(head)
		for i := range n {
			fmt.Fprintf(&b, item, i)
		}
		return b.String()
	}
	cred := "credentials:\n  a:\n    token_url: https://i/t\n    client_id: a\n    client_secret: b\n"
	valueFile := func(content string) string {
		return "credentials:\n  k:\n    type: static\n    value_file: " + writeFile(t, "value", content) + "\n"
	}
	t.Setenv("TB_HUGE_VALUE", strings.Repeat("k", 10<<20))
	t.Setenv("TB_NOT_UTF8", "key\xff")

	for _, tc := range []struct {
		name, ok, bad, want string
	}{
		{"scalar", "listen: {grpc: '" + strings.Repeat("a", maxScalar-2) + ":1'}\n", "listen: {grpc: '" + strings.Repeat("a", maxScalar-1) + ":1'}\n",
			"tb.yaml:1: listen.grpc: longer than 64 KiB"},
		{"scalar from the environment", "", "credentials:\n  k: {type: static, value: '${TB_HUGE_VALUE}'}\n",
			"tb.yaml:2: credentials.k.value: longer than 64 KiB"},
		{"static value", static(strings.Repeat("v", MaxHeaderValue), "{token}"), static(strings.Repeat("v", MaxHeaderValue+1), "{token}"),
			"tb.yaml:4: credentials.k.value: the header it makes is 8193 bytes, more than 8 KiB"},
		{"static value in its format", static(strings.Repeat("v", MaxHeaderValue-4), "Key {token}"), static(strings.Repeat("v", MaxHeaderValue-3), "Key {token}"),
			"tb.yaml:4: credentials.k.value: the header it makes is 8193 bytes, more than 8 KiB"},
		// value_file keeps the default format, "Bearer {token}".
		{"static value file", valueFile(strings.Repeat("v", MaxHeaderValue-7)), valueFile(strings.Repeat("v", MaxHeaderValue-6)),
			"tb.yaml:4: credentials.k.value_file: the header it makes is 8193 bytes, more than 8 KiB"},
		{"static value file size", "", valueFile(strings.Repeat("v", MaxHeaderValue+1)), "tb.yaml:4: credentials.k.value_file: cannot read"},
		{"static value control character", "", static(`"abc\r\nX-Injected: 1"`, "{token}"),
			"tb.yaml:4: credentials.k.value: holds a control character (byte 3): not a valid header value"},
		{"static value file control character", valueFile("abc\n"), valueFile("abc\x00def"),
			"tb.yaml:4: credentials.k.value_file: holds a control character (byte 3): not a valid header value"},
		{"static value not UTF-8", "", static("'${TB_NOT_UTF8}'", "{token}"), "tb.yaml:4: credentials.k.value: not valid UTF-8"},
		{"format control character", "", cred + "    format: \"Bearer {token}\\r\\nX-Injected: 1\"\n",
			"tb.yaml:6: credentials.a.format: holds a control character (byte 14): not a valid header value"},
		// The top-level counts only past the bound: parsing 100,000 entries
		// twice costs seconds under -race, and "a list" and "a mapping" show
		// the same check accepting its edge.
		{"key", "credentials:\n  " + strings.Repeat("k", maxKey) + ": {type: static, value: v}\n", "credentials:\n  ? " + strings.Repeat("k", maxKey+1) + "\n  : {type: static, value: v}\n", // an explicit key: YAML caps implicit ones at 1024
			"tb.yaml:2: credentials: a key is longer than 1024 bytes"},
		{"credentials", "", entries("credentials:\n", "  c%d: {type: static, value: v}\n", maxCredentials+1),
			"tb.yaml:2: credentials: more than 100000 entries"},
		{"routes", "", cred + entries("routes:\n", "  - {host: h%d.example.com, credential: a}\n", maxRoutes+1),
			"tb.yaml:7: routes: more than 100000 entries"},
		{"broker upstreams", entries("broker:\n  upstreams:\n", "    - {token_url: https://i%d/t}\n", maxUpstreams), entries("broker:\n  upstreams:\n", "    - {token_url: https://i%d/t}\n", maxUpstreams+1),
			"tb.yaml:3: broker.upstreams: more than 1000 entries"},
		{"a list", cred + entries("    scopes:\n", "      - s%d\n", maxListEntries), cred + entries("    scopes:\n", "      - s%d\n", maxListEntries+1),
			"tb.yaml:7: credentials.a.scopes: more than 1000 entries"},
		{"a mapping", cred + entries("    params:\n", "      p%d: v\n", maxListEntries), cred + entries("    params:\n", "      p%d: v\n", maxListEntries+1),
			"tb.yaml:7: credentials.a.params: more than 1000 entries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.ok != "" {
				if _, err := Parse("tb.yaml", []byte(tc.ok)); err != nil {
					t.Errorf("within the bound: %.300v", err)
				}
			}
			_, err := Parse("tb.yaml", []byte(tc.bad))
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("past the bound: got %.300v\nwant %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "vvvv") || strings.Contains(err.Error(), "kkkk") || strings.Contains(err.Error(), "abc") {
				t.Errorf("the error quotes the value: %.300s", err)
			}
		})
	}
}

// TestConfigFileBound: Load refuses a file past maxConfigFile without
// reading it all; one at the bound is read whole.
func TestConfigFileBound(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, n int) string {
		p := filepath.Join(dir, name)
		line := "# padding comment line\n"
		body := strings.Repeat(line, n/len(line)) + strings.Repeat("#", n%len(line))
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Read, not parsed: parsing 48 MiB of YAML takes a minute under -race.
	if b, err := readLimited(write("ok.yaml", maxConfigFile), maxConfigFile); err != nil || len(b) != maxConfigFile {
		t.Errorf("a file at the bound: %d bytes, %v", len(b), err)
	}
	big := write("big.yaml", maxConfigFile+1)
	if _, err := Load(big); err == nil || err.Error() != "config: "+big+": larger than 49152 KiB" {
		t.Errorf("a file past the bound: %v", err)
	}
}
