package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/canonpath"
)

// maxSecretFile bounds what client_secret_file may read, so a path such as
// /dev/zero fails instead of exhausting memory.
const maxSecretFile = 64 << 10

// setDefaults is called before the file is decoded, so an explicit value in
// the file (even "") replaces a default and an absent key keeps it.
func (c *Config) setDefaults() {
	c.Listen = Listen{GRPC: "127.0.0.1:9191", Admin: "127.0.0.1:9193"}
	c.DefaultAction = "deny"
	c.Cache = Cache{MaxTokens: 100000, ExpiryMargin: Duration(30 * time.Second), RefreshAhead: 0.2}
	c.Shutdown = Shutdown{Drain: Duration(10 * time.Second)}
	c.ForwardAuth = ForwardAuth{EnvoyPathPrefix: "/envoy"}
	c.Broker = Broker{Path: "/oauth/token", NegativeTTL: Duration(5 * time.Second)}
}

func (c *Credential) setDefaults() {
	c.Type = "client_credentials"
	c.AuthMethod = "client_secret_basic"
	c.Header = "Authorization"
	c.Format = "Bearer {token}"
	c.Timeout = Duration(10 * time.Second)
	c.DefaultLifetime = Duration(5 * time.Minute)
	c.Budget.setDefaults()
}

func (r *Redis) setDefaults() {
	r.KeyPrefix = "tokenbroker:"
	r.Timeout = Duration(50 * time.Millisecond)
	r.LockTTL = Duration(10 * time.Second)
}

func (r *Route) setLine(line int) { r.Line = line }

// check reports a problem with field unless ok, at the line of the field or
// of its nearest enclosing field present in the file. Nothing is reported
// under a field whose value could not be decoded: that was reported already.
func (d *decoder) check(ok bool, field, format string, args ...any) bool {
	if ok {
		return true
	}
	line := 0
	for f := field; f != ""; {
		if d.failed[f] {
			return false
		}
		if l, found := d.lines[f]; found && line == 0 {
			line = l
		}
		i := strings.LastIndexAny(f, ".[")
		if i < 0 {
			break
		}
		f = f[:i]
	}
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
	return false
}

// validate checks cfg, normalises hosts and methods, fills in Credential.Name
// and reads client_secret_file.
func (d *decoder) validate(c *Config) {
	d.check(c.DefaultAction == "deny" || c.DefaultAction == "allow", "default_action", `must be "deny" or "allow"`)
	d.check(c.Listen.GRPC == "" || hostPort(c.Listen.GRPC), "listen.grpc", "not a host:port address")
	d.check(c.Listen.Admin == "" || hostPort(c.Listen.Admin), "listen.admin", "not a host:port address")
	d.checkListenTLS(c.Listen.TLS)
	d.check(c.Listen.HTTP == "" || hostPort(c.Listen.HTTP), "listen.http", "not a host:port address")
	d.check(validPathPrefix(c.ForwardAuth.EnvoyPathPrefix), "forward_auth.envoy_path_prefix", `must be "" or start with "/", not end with "/", and hold no "?" or "#"`)
	for _, name := range slices.Sorted(maps.Keys(c.Credentials)) {
		cr := c.Credentials[name]
		cr.Name = name
		path := join("credentials", name)
		d.check(validName(name), path, `invalid credential name: use letters, digits, "_", "." and "-"`)
		d.checkCredential(cr, path)
	}
	for i := range c.Routes {
		d.checkRoute(&c.Routes[i], fmt.Sprintf("routes[%d]", i), c.Credentials)
		d.checkRemoveHeaders(&c.Routes[i], fmt.Sprintf("routes[%d]", i), c.Credentials)
	}
	d.checkInt(c.Cache.MaxTokens, minCacheTokens, maxCacheTokens, "cache.max_tokens")
	d.checkDuration(c.Cache.ExpiryMargin, 0, maxExpiryMargin, "cache.expiry_margin")
	d.checkFloat(c.Cache.RefreshAhead, minRefreshAhead, maxRefreshAhead, "cache.refresh_ahead")
	if c.Cache.Redis != nil {
		d.checkRedis(c.Cache.Redis, "cache.redis")
	}
	d.checkDuration(c.Shutdown.Delay, 0, maxShutdownDelay, "shutdown.delay")
	d.checkDuration(c.Shutdown.Drain, 0, maxShutdownDrain, "shutdown.drain")
	d.validateBroker(c)
	d.checkLifetimes(c)
	d.checkTracing(c.Tracing)
}

// checkLifetimes requires every default_lifetime to exceed
// cache.expiry_margin: a token of that lifetime would be unusable on
// arrival, and every request would ask for another.
func (d *decoder) checkLifetimes(c *Config) {
	if d.failed["cache.expiry_margin"] || c.Cache.ExpiryMargin.D() > maxExpiryMargin {
		return
	}
	margin := c.Cache.ExpiryMargin
	for _, name := range slices.Sorted(maps.Keys(c.Credentials)) {
		cr := c.Credentials[name]
		if cr.Type != "static" && inRange(cr.DefaultLifetime, minDefaultLifetime, maxDefaultLifetime) {
			d.check(cr.DefaultLifetime > margin, join("credentials", name)+".default_lifetime", "must be longer than cache.expiry_margin (%s)", short(margin.D()))
		}
	}
	for i, u := range c.Broker.Upstreams {
		d.check(!inRange(u.DefaultLifetime, minDefaultLifetime, maxDefaultLifetime) || u.DefaultLifetime > margin, fmt.Sprintf("broker.upstreams[%d].default_lifetime", i), "must be longer than cache.expiry_margin (%s)", short(margin.D()))
	}
}

func (d *decoder) checkCredential(c *Credential, path string) {
	d.applyPreset(c, path)
	d.checkSources(c, path)
	switch c.Type {
	case "client_credentials":
		d.check(httpURL(c.TokenURL), path+".token_url", "not an absolute http(s) URL")
		d.checkClientAuth(c, path, false)
	case "token_exchange", "jwt_bearer":
		d.checkGrant(c, path)
	case "static":
		d.checkStatic(c, path)
	default:
		d.check(false, path+".type", `unsupported credential type (supported: "client_credentials", "token_exchange", "jwt_bearer", "static")`)
	}
	d.check(token(c.Header), path+".header", "not a valid HTTP header name")
	if d.check(strings.Contains(c.Format, "{token}"), path+".format", "must contain {token}") {
		if p := HeaderValueProblem(c.Format); p != "" {
			d.check(false, path+".format", "%s", p)
		}
	}
	d.checkDuration(c.Timeout, minMintTimeout, maxMintTimeout, path+".timeout")
	d.checkDuration(c.DefaultLifetime, minDefaultLifetime, maxDefaultLifetime, path+".default_lifetime")
}

// checkSecret requires exactly one of client_secret and client_secret_file,
// reading the file into ClientSecret. No message includes the secret.
func (d *decoder) checkSecret(c *Credential, path string) {
	lit, file := path+".client_secret", path+".client_secret_file"
	_, hasLit := d.lines[lit]
	_, hasFile := d.lines[file]
	switch {
	case hasLit && hasFile:
		d.check(false, file, "client_secret and client_secret_file are mutually exclusive")
	case hasFile && c.ClientSecretFile == "":
		d.check(false, file, "must not be empty")
	case hasFile:
		s, err := readSecret(c.ClientSecretFile)
		switch {
		case err != nil && d.tainted[file]:
			d.check(false, file, "cannot read the file: %v", err)
		case err != nil:
			d.check(false, file, "cannot read %q: %v", c.ClientSecretFile, err)
		default:
			c.ClientSecret = s
			d.check(s != "", file, "file is empty: missing secret")
		}
	default:
		d.check(c.ClientSecret != "", lit, "missing secret (set client_secret or client_secret_file)")
	}
}

// readSecret reads a secret file, dropping one trailing newline. Its error
// names the OS problem but neither the path (the caller decides) nor content.
func readSecret(path string) (Secret, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", unwrapPath(err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	switch {
	case err != nil:
		return "", unwrapPath(err)
	case len(b) > maxSecretFile:
		return "", fmt.Errorf("larger than %d KiB", maxSecretFile>>10)
	}
	s := strings.TrimSuffix(string(b), "\n")
	return Secret(strings.TrimSuffix(s, "\r")), nil
}

func unwrapPath(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}

func (d *decoder) checkRoute(r *Route, path string, creds map[string]*Credential) {
	_, defined := creds[r.Credential]
	switch {
	case r.Credential == "":
		d.check(false, path+".credential", "required")
	case !defined && validName(r.Credential) && !d.tainted[path+".credential"]:
		d.check(false, path+".credential", "credential %q is not defined", r.Credential)
	case !defined:
		// Not a plausible name: it might be a misplaced secret, so don't echo it.
		d.check(false, path+".credential", "credential is not defined")
	}
	if d.check(r.Host != "", path+".host", "required") {
		host, ok := normalizeHost(r.Host)
		if d.check(ok, path+".host", "must be a host name or *.domain, optionally with :port") {
			r.Host = host
		}
	}
	if d.check(r.PathPrefix == "" || strings.HasPrefix(r.PathPrefix, "/"), path+".path_prefix", `must start with "/"`) && r.PathPrefix != "" {
		// Requests are matched on their canonical path; a prefix with no
		// canonical form could never match (README "Path rules").
		_, ok := canonpath.Canonical(r.PathPrefix)
		d.check(ok && !strings.ContainsAny(r.PathPrefix, "?#"), path+".path_prefix",
			`must be an unambiguous path: no dot segments, encoded "/" or "\", backslashes, control characters, "?" or "#"`)
	}
	for i, m := range r.Methods {
		r.Methods[i] = strings.ToUpper(m)
		d.check(token(m), fmt.Sprintf("%s.methods[%d]", path, i), "not a valid HTTP method")
	}
}

// normalizeHost lower-cases h and strips a port. The result is an IP
// address, a DNS name, or "*." followed by a DNS name.
func normalizeHost(h string) (string, bool) {
	h = strings.ToLower(h)
	if host, port, err := net.SplitHostPort(h); err == nil {
		if !validPort(port) {
			return "", false
		}
		h = host
	}
	if ip, ok := strings.CutPrefix(h, "["); ok {
		h, ok = strings.CutSuffix(ip, "]")
		return h, ok && net.ParseIP(h) != nil
	}
	if net.ParseIP(h) != nil {
		return h, true
	}
	return h, dnsName(strings.TrimPrefix(h, "*."))
}

func dnsName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range label {
			if !(c == '-' || c == '_' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9') {
				return false
			}
		}
	}
	return true
}

func hostPort(s string) bool {
	_, port, err := net.SplitHostPort(s)
	return err == nil && validPort(port)
}

func validPort(p string) bool {
	n, err := strconv.ParseUint(p, 10, 16)
	return err == nil && n <= 65535 && p != ""
}

func httpURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

func validName(s string) bool {
	for _, c := range s {
		if !(c == '_' || c == '.' || c == '-' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return s != ""
}

// token reports whether s is an RFC 9110 token, the syntax of header names
// and methods.
func token(s string) bool {
	for _, c := range s {
		if !(strings.ContainsRune("!#$%&'*+-.^_`|~", c) || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return s != ""
}

// validPathPrefix accepts "" (off) or a path such as /envoy: one that a
// forward-auth request path can be split at on a segment boundary.
func validPathPrefix(p string) bool {
	if p == "" {
		return true
	}
	return strings.HasPrefix(p, "/") && !strings.HasSuffix(p, "/") && !strings.ContainsAny(p, "?# \t")
}
