package config

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// fuzzSecret is what ${FUZZ_SECRET} expands to; no error may contain it.
const fuzzSecret = "fz-Secret-4Kp8"

// FuzzParse checks that Parse never panics, that its errors are well formed
// and never echo an expanded secret, and that a config it accepts holds the
// invariants the rest of tokenbroker relies on.
func FuzzParse(f *testing.F) {
	f.Setenv("FUZZ_SECRET", fuzzSecret)
	if example, err := os.ReadFile("testdata/example.yaml"); err == nil {
		f.Add(example)
	}
	for _, s := range []string{
		"",
		cred + "routes: [{host: '*.A.com:443', methods: [get], credential: billing}]\n",
		"credentials:\n  a: {token_url: https://i/t, client_id: a, client_secret: '${FUZZ_SECRET}'}\nroutes: [{host: h, credential: '${FUZZ_SECRET}'}]\n",
		"credentials:\n  a: &a {token_url: https://i/t, client_id: a, client_secret: x}\n  b: {<<: *a, client_id: b}\n",
		"listen: {grpc: '', admin: ':0'}\ncache: {max_tokens: 0x10, expiry_margin: 1m, refresh_ahead: .5}\nshutdown: {delay: 1s, drain: 2s}\n",
		"a: &a [x, x]\nb: &b [*a, *a]\n",
		"credentials:\n  a: {client_secret_file: '${FUZZ_SECRET}', client_secret: $${x}}\n",
		"routes:\n- {host: a, credential: x}\n- host: b\n  credential: y\ncredentials:\n  x: {token_url: https://i/t, client_id: a, client_secret: b}\n",
		"credentials:\n  ? a\n  : {type: static, value: v}\n",
		"# lead\n\nlisten: {grpc: x}\ncredentials:\n  a: {type: static, value: v}\ncache: {max_tokens: -1}\n",
		"credentials: # c\n  x:\n    token_url: https://i/t\n    client_id: a\n\n# gap\n  y: {type: static, value: v}\nroutes:\n  - host: h\n    credential: x\n    methods: [get]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data)
		sameAsWhole(t, "fuzz.yaml", data, cfg, err)
		if err != nil {
			checkErrors(t, err, !bytes.Contains(data, []byte(fuzzSecret)))
			return
		}
		checkConfig(t, cfg)
	})
}

func checkErrors(t *testing.T, err error, secretHidden bool) {
	var errs Errors
	if !errors.As(err, &errs) || len(errs) == 0 {
		t.Fatalf("error is %T %v, want non-empty Errors", err, err)
	}
	for i, e := range errs {
		if e.File != "fuzz.yaml" || e.Line < 0 || e.Msg == "" || (i > 0 && e.Line < errs[i-1].Line) {
			t.Errorf("malformed or unsorted error %d: %#v", i, e)
		}
		if strings.Contains(e.Error(), "\n") {
			t.Errorf("error spans lines: %q", e.Error())
		}
	}
	if secretHidden && strings.Contains(err.Error(), fuzzSecret) {
		t.Errorf("error echoes an expanded secret:\n%s", err)
	}
}

func checkConfig(t *testing.T, c *Config) {
	d := &decoder{lines: map[string]int{}, tainted: map[string]bool{}, failed: map[string]bool{}}
	ok := func(cond bool, what string, args ...any) {
		if !cond {
			t.Errorf("accepted config breaks: "+what, args...)
		}
	}
	ok(c.DefaultAction == "deny" || c.DefaultAction == "allow", "default_action %q", c.DefaultAction)
	ok(c.Listen.GRPC == "" || hostPort(c.Listen.GRPC), "listen.grpc %q", c.Listen.GRPC)
	ok(c.Listen.Admin == "" || hostPort(c.Listen.Admin), "listen.admin %q", c.Listen.Admin)
	for _, name := range slices.Sorted(maps.Keys(c.Credentials)) {
		cr := c.Credentials[name]
		ok(cr != nil && cr.Name == name && validName(name), "credential %q", name)
		ok(len(cr.Identity()) == 64 && strings.Contains(cr.Format, "{token}") && token(cr.Header), "credential %q identity or header", name)
		if cr.Type == "static" {
			ok(cr.Value != "" || cr.ValueFile != "", "credential %q static value", name)
			continue
		}
		ok(cr.ClientSecret != "", "credential %q secret", name)
		ok(cr.Timeout > 0 && cr.DefaultLifetime > 0, "credential %q settings", name)
		ok(cr.Type == "client_credentials" && httpURL(cr.TokenURL) && cr.ClientID != "", "credential %q source", name)
	}
	for i, r := range c.Routes {
		_, defined := c.Credentials[r.Credential]
		host, valid := normalizeHost(r.Host)
		ok(defined && valid && host == r.Host && r.Line > 0, "route %d %+v", i, r)
		ok(r.PathPrefix == "" || r.PathPrefix[0] == '/', "route %d path_prefix", i)
		for _, m := range r.Methods {
			ok(token(m) && m == strings.ToUpper(m), "route %d method %q", i, m)
		}
	}
	ok(c.Cache.MaxTokens >= 1 && c.Cache.ExpiryMargin >= 0 && c.Cache.RefreshAhead > 0 && c.Cache.RefreshAhead < 1,
		"cache %+v", c.Cache)
	ok(c.Shutdown.Delay >= 0 && c.Shutdown.Drain >= 0, "shutdown %+v", c.Shutdown)
	// Validation is idempotent: a loaded config passes it again.
	d.validate(c)
	ok(len(d.errs) == 0, "revalidation: %v", d.errs)
}

// sameAsWhole checks that Parse, which may parse the big sections in
// slices (stream.go), gives what parsing the file whole gives: the same
// configuration, or the same errors.
func sameAsWhole(t *testing.T, file string, data []byte, cfg *Config, err error) {
	t.Helper()
	whole, werr := parse(file, data, false)
	if fmt.Sprint(err) != fmt.Sprint(werr) {
		t.Fatalf("streamed and whole parse differ:\nstreamed: %.1000v\nwhole:    %.1000v", err, werr)
	}
	if reflect.DeepEqual(cfg, whole) {
		return
	}
	a, b := reflect.ValueOf(cfg).Elem(), reflect.ValueOf(whole).Elem()
	for i := range a.NumField() {
		if !reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			t.Fatalf("streamed and whole parse differ in %s", a.Type().Field(i).Name)
		}
	}
}
