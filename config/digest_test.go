package config

import (
	"reflect"
	"strconv"
	"testing"
)

// TestCredentialsDigestSeesEveryField changes each field of a credential,
// nested ones (budget) included, one at a time: every change must change the
// digest, or a reload that changes only that field would be taken for
// "unchanged" and not applied. It walks the struct by reflection, so a field
// added to Credential later is covered too.
func TestCredentialsDigestSeesEveryField(t *testing.T) {
	base := func() *Credential {
		return &Credential{Name: "a", TokenURL: "https://idp/token", ClientID: "id", ClientSecret: "s1",
			Scopes: []string{"x"}, Params: map[string]string{"k": "v"}, Budget: Budget{Mints: 1}}
	}
	digest := func(c *Credential) Digest {
		return (&Config{Credentials: map[string]*Credential{"a": c}}).CredentialsDigest()
	}
	want := digest(base())
	if digest(base()) != want {
		t.Fatal("digest of equal credentials differs")
	}
	var fields func(prefix string, typ reflect.Type, path []int)
	n := 0
	fields = func(prefix string, typ reflect.Type, path []int) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			p := append(append([]int(nil), path...), i)
			if f.Type.Kind() == reflect.Struct {
				fields(prefix+f.Name+".", f.Type, p)
				continue
			}
			c := base()
			v := reflect.ValueOf(c).Elem().FieldByIndex(p)
			change(t, prefix+f.Name, v)
			if digest(c) == want {
				t.Errorf("changing %s%s leaves the digest unchanged", prefix, f.Name)
			}
			n++
		}
	}
	fields("", reflect.TypeFor[Credential](), nil)
	if n < 30 { // 38 today: the walk did reach them
		t.Fatalf("walked %d fields; Credential has more", n)
	}
}

// change sets v to a value different from the one base gave it.
func change(t *testing.T, name string, v reflect.Value) {
	t.Helper()
	switch v.Kind() {
	case reflect.String:
		v.SetString(v.String() + "-changed")
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Int64:
		v.SetInt(v.Int() + 1)
	case reflect.Float64:
		v.SetFloat(v.Float() + 0.25)
	case reflect.Slice:
		v.Set(reflect.Append(v, reflect.ValueOf("y").Convert(v.Type().Elem())))
	case reflect.Map:
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		v.SetMapIndex(reflect.ValueOf("k"), reflect.ValueOf("v-changed"))
	default:
		t.Fatalf("%s: add a way to change a %s", name, v.Type())
	}
}

// TestCredentialsDigest covers what the field walk does not: a rotated
// secret, a renamed or removed credential, values moved between names,
// and map order.
func TestCredentialsDigest(t *testing.T) {
	cred := func(secret Secret, scopes ...string) *Credential {
		return &Credential{TokenURL: "https://idp/token", ClientID: "id", ClientSecret: secret, Scopes: scopes}
	}
	of := func(m map[string]*Credential) Digest { return (&Config{Credentials: m}).CredentialsDigest() }
	ab := of(map[string]*Credential{"a": cred("s", "x"), "b": cred("s", "y")})
	for name, m := range map[string]map[string]*Credential{
		"secret rotated":     {"a": cred("t", "x"), "b": cred("s", "y")},
		"renamed":            {"a": cred("s", "x"), "c": cred("s", "y")},
		"removed":            {"a": cred("s", "x")},
		"scope added":        {"a": cred("s", "x"), "b": cred("s", "y", "z")},
		"values swapped":     {"a": cred("s", "y"), "b": cred("s", "x")},
		"empty vs nil scope": {"a": cred("s", "x"), "b": cred("s")},
	} {
		if of(m) == ab {
			t.Errorf("%s: digest unchanged", name)
		}
	}
	// Go randomises map order: many builds of the same map agree.
	for range 20 {
		if of(map[string]*Credential{"b": cred("s", "y"), "a": cred("s", "x")}) != ab {
			t.Fatal("digest depends on map order")
		}
	}
	// Both mean no credentials: the count prefix alone decides.
	if of(nil) != of(map[string]*Credential{}) {
		t.Error("no credentials digests differently for a nil and an empty map")
	}
}

// TestRoutesDigest: every field of a route and the routes' order count.
func TestRoutesDigest(t *testing.T) {
	base := func() []Route {
		return []Route{{Host: "a.example.com", Credential: "a", Line: 3}, {Host: "b.example.com", Credential: "b", Line: 5}}
	}
	of := func(rs []Route) Digest { return (&Config{Routes: rs}).RoutesDigest() }
	want := of(base())
	if of(base()) != want {
		t.Fatal("digest of equal routes differs")
	}
	for i := range reflect.TypeFor[Route]().NumField() {
		rs := base()
		v := reflect.ValueOf(&rs[0]).Elem().Field(i)
		if v.Kind() == reflect.Int {
			v.SetInt(v.Int() + 1)
		} else {
			change(t, reflect.TypeFor[Route]().Field(i).Name, v)
		}
		if of(rs) == want {
			t.Errorf("changing %s leaves the digest unchanged", reflect.TypeFor[Route]().Field(i).Name)
		}
	}
	rs := base()
	rs[0], rs[1] = rs[1], rs[0]
	if of(rs) == want {
		t.Error("reordering routes leaves the digest unchanged")
	}
}

// BenchmarkCredentialsDigest: what a reload of a 100,000-credential file
// pays to compare credentials (once per reload; nothing per request).
func BenchmarkCredentialsDigest(b *testing.B) {
	cfg := &Config{Credentials: map[string]*Credential{}}
	for i := range 100_000 {
		name := "client-" + strconv.Itoa(i)
		cfg.Credentials[name] = &Credential{Name: name, Type: "client_credentials", TokenURL: "https://idp.example.com/token",
			ClientID: name, ClientSecret: Secret("secret-" + name), AuthMethod: "client_secret_basic", Scopes: []string{"api"},
			Header: "Authorization", Format: "Bearer {token}"}
	}
	b.ReportAllocs()
	for b.Loop() {
		cfg.CredentialsDigest()
	}
}
