package config

import (
	"fmt"
	"maps"
	pathpkg "path"
	"slices"
	"strings"
	"time"
)

// Broker configures the token-endpoint broker: an RFC 6749 §4.4 token
// endpoint that answers repeated client credentials requests from cache.
type Broker struct {
	Path string `yaml:"path"` // default /oauth/token
	// NegativeTTL is how long an IdP rejection is answered from memory for the
	// same client, secret and parameters, against retry storms (default 5s).
	NegativeTTL Duration         `yaml:"negative_ttl"`
	Upstreams   []BrokerUpstream `yaml:"upstreams"`
	// BindingKeyFile holds the key of the HMAC that ties a cached token to
	// the secret that minted it. Absent, the key is derived from
	// cache.redis's encryption keys (so a fleet shares it), or random per
	// process without Redis.
	BindingKeyFile string `yaml:"binding_key_file"`
	// BindingKey is read from BindingKeyFile by the loader.
	BindingKey Secret `yaml:"-"`
}

// BrokerUpstream is an IdP token endpoint that broker requests are sent to.
type BrokerUpstream struct {
	// Name labels this upstream in metrics and logs (default "upstream-N").
	Name     string `yaml:"name"`
	TokenURL string `yaml:"token_url"`
	// ClientIDs are path.Match globs; absent means any client id.
	ClientIDs []string `yaml:"client_ids"`
	// PassParams are the request fields forwarded to the IdP and part of the
	// cache key (default audience, scope, resource).
	PassParams []string `yaml:"pass_params"`
	// Limit is a token bucket per client id on mints (not on requests).
	Limit RateLimit `yaml:"limit"`
	// Budget applies to each client id separately.
	Budget          Budget   `yaml:"budget"`
	CostPerMint     float64  `yaml:"cost_per_mint"`
	Timeout         Duration `yaml:"timeout"`          // one IdP request (default 10s)
	DefaultLifetime Duration `yaml:"default_lifetime"` // when the IdP omits expires_in (default 5m)

	// Line is where the upstream starts in the file, for messages.
	Line int `yaml:"-"`
}

func (u *BrokerUpstream) setLine(line int) { u.Line = line }

// RateLimit allows Mints per Per, refilled continuously; zero Mints: no limit.
type RateLimit struct {
	Mints int64    `yaml:"mints"`
	Per   Duration `yaml:"per"`
}

// Budget caps mints in a rolling window. Zero Mints means no budget.
// Warnings are logged at 80% and 100%; with Enforce, minting stops at the
// limit while tokens already cached are served until they expire.
type Budget struct {
	Mints   int64    `yaml:"mints"`
	Per     Duration `yaml:"per"` // default 720h
	Enforce bool     `yaml:"enforce"`
}

// Admin configures the admin listener's access control.
type Admin struct {
	// TokenFile holds a bearer token required by the admin API's mutating
	// endpoints (POST /admin/...); empty: no token required.
	TokenFile string `yaml:"token_file"`
	// Token is read from TokenFile by the loader.
	Token Secret `yaml:"-"`
}

// DefaultBudgetWindow is the budget window when `per` is not given.
const DefaultBudgetWindow = 720 * time.Hour

func (u *BrokerUpstream) setDefaults() {
	u.PassParams = []string{"audience", "scope", "resource"}
	u.Timeout = Duration(10 * time.Second)
	u.DefaultLifetime = Duration(5 * time.Minute)
	u.Budget.setDefaults()
}

func (b *Budget) setDefaults() { b.Per = Duration(DefaultBudgetWindow) }

// validateBroker checks listen.broker, broker.* and admin.token_file.
func (d *decoder) validateBroker(c *Config) {
	d.check(c.Listen.Broker == "" || hostPort(c.Listen.Broker), "listen.broker", "not a host:port address")
	b := &c.Broker
	d.check(strings.HasPrefix(b.Path, "/"), "broker.path", `must start with "/"`)
	d.checkDuration(b.NegativeTTL, 0, maxNegativeTTL, "broker.negative_ttl")
	d.check(c.Listen.Broker == "" || len(b.Upstreams) > 0, "listen.broker", "the broker needs at least one entry in broker.upstreams")
	for i := range b.Upstreams {
		u := &b.Upstreams[i]
		path := fmt.Sprintf("broker.upstreams[%d]", i)
		if u.Name == "" {
			u.Name = fmt.Sprintf("upstream-%d", i)
		}
		d.check(validName(u.Name), path+".name", `invalid name: use letters, digits, "_", "." and "-"`)
		d.check(httpURL(u.TokenURL), path+".token_url", "not an absolute http(s) URL")
		for j, g := range u.ClientIDs {
			_, err := pathpkg.Match(g, "")
			d.check(g != "" && err == nil, fmt.Sprintf("%s.client_ids[%d]", path, j), "not a valid glob")
		}
		for j, p := range u.PassParams {
			d.check(token(p) && !reservedParam[p], fmt.Sprintf("%s.pass_params[%d]", path, j),
				"must be a parameter name other than grant_type, client_id and client_secret")
		}
		d.checkRate(u.Limit, path+".limit")
		d.checkBudget(u.Budget, path+".budget")
		d.checkFloat(u.CostPerMint, 0, maxCostPerMint, path+".cost_per_mint")
		d.checkDuration(u.Timeout, minMintTimeout, maxMintTimeout, path+".timeout")
		d.checkDuration(u.DefaultLifetime, minDefaultLifetime, maxDefaultLifetime, path+".default_lifetime")
	}
	for _, name := range slices.Sorted(maps.Keys(c.Credentials)) {
		cr := c.Credentials[name]
		d.checkBudget(cr.Budget, join("credentials", name)+".budget")
		d.checkFloat(cr.CostPerMint, 0, maxCostPerMint, join("credentials", name)+".cost_per_mint")
	}
	if b.BindingKeyFile != "" {
		k, err := readSecret(b.BindingKeyFile)
		switch {
		case err != nil:
			d.check(false, "broker.binding_key_file", "cannot read the file: %v", err)
		default:
			b.BindingKey = k
			d.check(len(k) >= 16, "broker.binding_key_file", "key must be at least 16 bytes")
		}
	}
	if c.Admin.TokenFile != "" {
		s, err := readSecret(c.Admin.TokenFile)
		switch {
		case err != nil:
			d.check(false, "admin.token_file", "cannot read the file: %v", err)
		default:
			c.Admin.Token = s
			d.check(s != "", "admin.token_file", "file is empty")
		}
	}
}

var reservedParam = map[string]bool{"grant_type": true, "client_id": true, "client_secret": true}

// checkRate checks a token bucket; per matters only when mints is set.
func (d *decoder) checkRate(r RateLimit, path string) {
	d.checkInt(r.Mints, 0, maxRateMints, path+".mints")
	if r.Mints != 0 || d.set(path+".per") {
		d.checkDuration(r.Per, minRateWindow, maxRateWindow, path+".per")
	}
}

func (d *decoder) checkBudget(b Budget, path string) {
	d.checkInt(b.Mints, 0, maxBudgetMints, path+".mints")
	d.checkDuration(b.Per, minBudgetWindow, maxBudgetWindow, path+".per")
}
