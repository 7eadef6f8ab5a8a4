package config

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func testKey(b byte) string {
	k := make([]byte, 32)
	for i := range k {
		k[i] = b
	}
	return base64.StdEncoding.EncodeToString(k)
}

func TestRedisDefaultsAndValues(t *testing.T) {
	keys := writeFile(t, "keys", "# newest first\n"+testKey(1)+"\n\n"+testKey(2)+"\n")
	pw := writeFile(t, "pw", "redis-pass\n")
	cfg, err := Parse("tb.yaml", []byte(fmt.Sprintf("cache:\n  redis:\n    addrs: [127.0.0.1:6379]\n    encryption_keys_file: %s\n", keys)))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Cache.Redis
	if r.KeyPrefix != "tokenbroker:" || r.Timeout.D() != 50*time.Millisecond || r.LockTTL.D() != 10*time.Second || r.DB != 0 || r.TLS.Enabled {
		t.Fatalf("defaults: %+v", r)
	}
	if len(r.EncryptionKeys) != 2 || r.EncryptionKeys[0][0] != 1 || r.EncryptionKeys[1][0] != 2 {
		t.Fatalf("keys not read in order: %d", len(r.EncryptionKeys))
	}

	cfg, err = Parse("tb.yaml", []byte(fmt.Sprintf(`cache:
  redis:
    addrs: [s1:26379, s2:26379]
    master_name: mymaster
    username: tb
    password_file: %s
    db: 2
    tls: {enabled: true, server_name: redis.internal}
    key_prefix: "prod:tb:"
    encryption_keys_file: %s
    timeout: 80ms
    lock_ttl: 5s
`, pw, keys)))
	if err != nil {
		t.Fatal(err)
	}
	r = cfg.Cache.Redis
	got := []any{r.Addrs, r.MasterName, r.Username, r.Password.Reveal(), r.DB, r.TLS, r.KeyPrefix, r.Timeout.D(), r.LockTTL.D()}
	want := []any{[]string{"s1:26379", "s2:26379"}, "mymaster", "tb", "redis-pass", 2, RedisTLS{Enabled: true, ServerName: "redis.internal"},
		"prod:tb:", 80 * time.Millisecond, 5 * time.Second}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %v\nwant %v", got, want)
	}

	cfg, err = Parse("tb.yaml", []byte("cache:\n  max_tokens: 5\n"))
	if err != nil || cfg.Cache.Redis != nil {
		t.Fatalf("no redis block must mean no shared tier: %+v %v", cfg.Cache.Redis, err)
	}
}

func TestRedisErrors(t *testing.T) {
	keys := writeFile(t, "keys", testKey(7)+"\n")
	badKeys := writeFile(t, "bad", testKey(7)+"\n"+base64.StdEncoding.EncodeToString([]byte("sixteen-byte-key"))+"\n")
	notB64 := writeFile(t, "nb64", "this is not base64 k3y-material!\n")
	empty := writeFile(t, "empty", "# nothing\n")
	pw := writeFile(t, "pw", "p\n")
	emptyPw := writeFile(t, "emptypw", "")
	notPEM := writeFile(t, "ca", "not a certificate")
	missing := filepath.Join(t.TempDir(), "missing")
	head := "cache:\n  redis:\n"
	withKeys := head + "    encryption_keys_file: " + keys + "\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"no addrs", withKeys, "tb.yaml:2: cache.redis.addrs: at least one host:port address is required"},
		{"bad addr", withKeys + "    addrs: [localhost]\n", "tb.yaml:4: cache.redis.addrs[0]: not a host:port address"},
		{"no keys file", head + "    addrs: [a:1]\n", "tb.yaml:2: cache.redis.encryption_keys_file: required when redis is set"},
		{"missing keys file", head + "    addrs: [a:1]\n    encryption_keys_file: " + missing + "\n", "tb.yaml:4: cache.redis.encryption_keys_file: \"" + missing + "\": cannot read the file: no such file or directory"},
		{"short key", head + "    addrs: [a:1]\n    encryption_keys_file: " + badKeys + "\n", "tb.yaml:4: cache.redis.encryption_keys_file: \"" + badKeys + "\": line 2: 16 bytes, want 32"},
		{"not base64", head + "    addrs: [a:1]\n    encryption_keys_file: " + notB64 + "\n", "line 1: not base64"},
		{"no key in file", head + "    addrs: [a:1]\n    encryption_keys_file: " + empty + "\n", "no key in the file"},
		{"negative db", withKeys + "    addrs: [a:1]\n    db: -1\n", "tb.yaml:5: cache.redis.db: must be between 0 and 65535"},
		{"db on a cluster", withKeys + "    addrs: [a:1, b:1]\n    db: 3\n", "tb.yaml:5: cache.redis.db: Redis Cluster has only db 0"},
		{"brace in a cluster's key_prefix", withKeys + "    addrs: [a:1, b:1]\n    key_prefix: \"tb{x\"\n", `tb.yaml:5: cache.redis.key_prefix: must not hold "{" or "}" with Redis Cluster`},
		{"hash tag in a cluster's key_prefix", withKeys + "    addrs: [a:1, b:1]\n    key_prefix: \"{tb}:\"\n", `tb.yaml:5: cache.redis.key_prefix: must not hold "{" or "}"`},
		{"zero timeout", withKeys + "    addrs: [a:1]\n    timeout: 0s\n", "tb.yaml:5: cache.redis.timeout: must be between 1ms and 10s"},
		{"bad timeout", withKeys + "    addrs: [a:1]\n    timeout: fast\n", "tb.yaml:5: cache.redis.timeout: must be a duration"},
		{"zero lock_ttl", withKeys + "    addrs: [a:1]\n    lock_ttl: 0s\n", "tb.yaml:5: cache.redis.lock_ttl: must be between 100ms and 5m"},
		{"password twice", withKeys + "    addrs: [a:1]\n    password: x\n    password_file: " + pw + "\n", "tb.yaml:6: cache.redis.password_file: password and password_file are mutually exclusive"},
		{"empty password file", withKeys + "    addrs: [a:1]\n    password_file: " + emptyPw + "\n", "tb.yaml:5: cache.redis.password_file: file is empty"},
		{"missing password file", withKeys + "    addrs: [a:1]\n    password_file: " + missing + "\n", "tb.yaml:5: cache.redis.password_file: cannot read"},
		{"ca not PEM", withKeys + "    addrs: [a:1]\n    tls: {enabled: true, ca_file: " + notPEM + "}\n", "tb.yaml:5: cache.redis.tls.ca_file: no PEM certificate"},
		{"tls settings without tls", withKeys + "    addrs: [a:1]\n    tls:\n      server_name: r\n", "tb.yaml:5: cache.redis.tls.enabled: ca_file or server_name is set but TLS is not enabled"},
		{"unknown key", withKeys + "    addrs: [a:1]\n    cluster: true\n", "tb.yaml:5: cache.redis.cluster: unknown field"},
		{"unknown tls key", withKeys + "    addrs: [a:1]\n    tls: {insecure: true}\n", "tb.yaml:5: cache.redis.tls.insecure: unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("tb.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("accepted; want %s", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("\ngot  %s\nwant %s", err, tc.want)
			}
			for _, secret := range []string{testKey(7), "k3y-material", "sixteen"} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("error echoes key material: %s", err)
				}
			}
		})
	}
}

func TestRedisSecretsNeverPrinted(t *testing.T) {
	keys := writeFile(t, "keys", testKey(9)+"\n")
	cfg, err := Parse("tb.yaml", []byte("cache:\n  redis:\n    addrs: [a:1]\n    password: redis-pw-4412\n    encryption_keys_file: "+keys+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		out := fmt.Sprintf(format, *cfg.Cache.Redis)
		if strings.Contains(out, "redis-pw-4412") || strings.Contains(out, "9 9 9") || strings.Contains(out, testKey(9)) || strings.Contains(out, "[9 ") {
			t.Fatalf("%s prints a secret: %s", format, out)
		}
	}
}

func TestRedisCAFileBounded(t *testing.T) {
	keys := writeFile(t, "keys", testKey(1)+"\n")
	_, err := Parse("tb.yaml", []byte("cache:\n  redis:\n    addrs: [a:1]\n    encryption_keys_file: "+keys+"\n    tls: {enabled: true, ca_file: /dev/zero}\n"))
	if err == nil || !strings.Contains(err.Error(), "tb.yaml:5: cache.redis.tls.ca_file: cannot read \"/dev/zero\": larger than 1024 KiB") {
		t.Fatalf("got %v", err)
	}
}

// TestKeyPrefixBracesOutsideCluster: one Redis (or Sentinel) hashes no
// slots, so a prefix with braces is harmless there and stays accepted.
func TestKeyPrefixBracesOutsideCluster(t *testing.T) {
	keys := writeFile(t, "keys", testKey(7)+"\n")
	for _, addrs := range []string{"[a:1]", "[s1:1, s2:1]\n    master_name: m"} {
		y := "cache:\n  redis:\n    encryption_keys_file: " + keys + "\n    key_prefix: \"{tb}:\"\n    addrs: " + addrs + "\n"
		if _, err := Parse("tb.yaml", []byte(y)); err != nil {
			t.Fatalf("%s: %v", addrs, err)
		}
	}
}
