package filter

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
)

// TestStaticKeyRotation: a static API key in any header, cached without
// expiry, and a changed value file served without a restart.
func TestStaticKeyRotation(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	write := func(v string, mod time.Time) {
		if err := os.WriteFile(keyFile, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(keyFile, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
	write("key-one\n", time.Now().Add(-time.Minute))
	cfg, err := config.Parse("t.yaml", []byte(`credentials:
  maps:
    type: static
    value_file: `+keyFile+`
    header: X-Api-Key
    format: '{token}'
routes:
  - {host: maps.example.com, credential: maps, remove_headers: [authorization]}
`))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	clock := func() time.Time { return now }
	src, err := credential.NewStatic(cfg.Credentials["maps"])
	if err != nil {
		t.Fatal(err)
	}
	src.Now = clock
	tokens, err := cache.New(cache.Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer tokens.Close()
	f, err := New(cfg, map[string]credential.Source{"maps": src}, tokens, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	decide := func() Decision {
		tokens.Settle()
		return f.Decide(context.Background(), &Request{Host: "maps.example.com", Path: "/", Method: "GET"})
	}
	d := decide()
	if !d.Allowed || d.Header != (Header{"x-api-key", "key-one"}) || len(d.Remove) != 1 || d.Remove[0] != "authorization" {
		t.Fatalf("decision %+v", d)
	}
	// A year on, the key is still served from the cache (no expiry).
	now = now.Add(365 * 24 * time.Hour)
	if d := decide(); d.Header.Value != "key-one" {
		t.Fatalf("a year on: %+v", d)
	}
	write("key-two\n", time.Now())
	now = now.Add(2 * time.Second)
	if d := decide(); d.Header.Value != "key-two" {
		t.Fatalf("after the file changed: %+v", d)
	}
}
