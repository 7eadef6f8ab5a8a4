package config

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"strings"
)

// checkRedis validates cache.redis and reads its password and key files.
// No message includes a password or key.
func (d *decoder) checkRedis(r *Redis, path string) {
	if d.check(len(r.Addrs) > 0, path+".addrs", "at least one host:port address is required") {
		for i, a := range r.Addrs {
			d.check(hostPort(a), fmt.Sprintf("%s.addrs[%d]", path, i), "not a host:port address")
		}
	}
	cluster := len(r.Addrs) > 1 && r.MasterName == ""
	if d.checkInt(int64(r.DB), 0, maxRedisDB, path+".db") {
		d.check(r.DB == 0 || !cluster, path+".db", "Redis Cluster has only db 0 (several addrs without master_name mean a cluster)")
	}
	// Redis Cluster hashes only what is between a key's first "{" and the
	// next "}": a brace in the prefix would move that from each credential's
	// own {tag}, so its token and lock keys could land in different slots,
	// or every credential's keys in one.
	d.check(!cluster || !strings.ContainsAny(r.KeyPrefix, "{}"), path+".key_prefix",
		`must not hold "{" or "}" with Redis Cluster: each credential's keys share a hash slot through a {tag} of their own`)
	d.checkDuration(r.Timeout, minRedisTimeout, maxRedisTimeout, path+".timeout")
	d.checkDuration(r.LockTTL, minLockTTL, maxLockTTL, path+".lock_ttl")

	pw, pwFile := path+".password", path+".password_file"
	_, hasPw := d.lines[pw]
	_, hasFile := d.lines[pwFile]
	switch {
	case hasPw && hasFile:
		d.check(false, pwFile, "password and password_file are mutually exclusive")
	case hasFile && r.PasswordFile == "":
		d.check(false, pwFile, "must not be empty")
	case hasFile:
		s, err := readSecret(r.PasswordFile)
		switch {
		case err != nil && d.tainted[pwFile]:
			d.check(false, pwFile, "cannot read the file: %v", err)
		case err != nil:
			d.check(false, pwFile, "cannot read %q: %v", r.PasswordFile, err)
		default:
			r.Password = s
			d.check(s != "", pwFile, "file is empty: missing password")
		}
	}

	if r.TLS.CAFile != "" {
		b, err := readLimited(r.TLS.CAFile, 1<<20)
		switch {
		case err != nil:
			d.check(false, path+".tls.ca_file", "cannot read %q: %v", r.TLS.CAFile, unwrapPath(err))
		default:
			d.check(x509.NewCertPool().AppendCertsFromPEM(b), path+".tls.ca_file", "no PEM certificate in %q", r.TLS.CAFile)
		}
	}
	d.check(r.TLS.Enabled || r.TLS.CAFile == "" && r.TLS.ServerName == "", path+".tls.enabled",
		"ca_file or server_name is set but TLS is not enabled")

	kf := path + ".encryption_keys_file"
	if !d.check(r.EncryptionKeysFile != "", kf, "required when redis is set (one base64 key of 32 random bytes per line: head -c 32 /dev/urandom | base64)") {
		return
	}
	keys, err := readKeys(r.EncryptionKeysFile)
	switch {
	case err != nil && d.tainted[kf]:
		d.check(false, kf, "%v", err)
	case err != nil:
		d.check(false, kf, "%q: %v", r.EncryptionKeysFile, err)
	default:
		r.EncryptionKeys = keys
	}
}

// readKeys reads an encryption keys file: one base64 key of 32 bytes per
// line, blank lines and # comments skipped. Errors name the line, never a key.
func readKeys(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the file: %w", unwrapPath(err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("cannot read the file: %w", unwrapPath(err))
	case len(b) > maxSecretFile:
		return nil, fmt.Errorf("larger than %d KiB", maxSecretFile>>10)
	}
	var keys [][]byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: not base64", n)
		}
		if len(k) != 32 {
			return nil, fmt.Errorf("line %d: %d bytes, want 32 (head -c 32 /dev/urandom | base64)", n, len(k))
		}
		keys = append(keys, k)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cannot read the file: %w", err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("no key in the file (one base64 key of 32 random bytes per line)")
	}
	return keys, nil
}

// readLimited reads at most limit bytes of path, so /dev/zero fails rather
// than exhausting memory.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && int64(len(b)) > limit {
		err = fmt.Errorf("larger than %d KiB", limit>>10)
	}
	return b, err
}
