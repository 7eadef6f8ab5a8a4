// Package config loads and validates tokenbroker's YAML configuration.
//
// Every problem is reported with the file, line and field it concerns, and
// secret values are never echoed back in an error.
package config

import "time"

// Config is the whole configuration file after loading, defaulting and validation.
type Config struct {
	Listen        Listen                 `yaml:"listen"`
	DefaultAction string                 `yaml:"default_action"` // "deny" (default) or "allow"
	Credentials   map[string]*Credential `yaml:"credentials"`
	Routes        []Route                `yaml:"routes"`
	Cache         Cache                  `yaml:"cache"`
	Shutdown      Shutdown               `yaml:"shutdown"`
	Broker        Broker                 `yaml:"broker"`
	Admin         Admin                  `yaml:"admin"`

	// File is the path the configuration was read from ("" when parsed from memory).
	File string `yaml:"-"`
}

// Listen holds listener addresses; an empty address turns that listener off.
type Listen struct {
	GRPC  string `yaml:"grpc"`  // ext_authz v3 + grpc.health.v1 + reflection
	Admin string `yaml:"admin"` // /healthz /readyz /metrics
	// Broker is the token-endpoint broker (POST broker.path); off when empty.
	Broker string `yaml:"broker"`
}

// Credential describes one token source.
type Credential struct {
	// Name is the key under `credentials:`; filled in by the loader.
	Name string `yaml:"-"`

	Type             string            `yaml:"type"` // client_credentials
	TokenURL         string            `yaml:"token_url"`
	ClientID         string            `yaml:"client_id"`
	ClientSecret     Secret            `yaml:"client_secret"`
	ClientSecretFile string            `yaml:"client_secret_file"`
	AuthMethod       string            `yaml:"auth_method"` // client_secret_basic (default) | client_secret_post
	Scopes           []string          `yaml:"scopes"`
	Audience         string            `yaml:"audience"`
	Params           map[string]string `yaml:"params"`
	Header           string            `yaml:"header"` // default Authorization
	Format           string            `yaml:"format"` // default "Bearer {token}"

	// Timeout bounds one token request (default 10s).
	Timeout Duration `yaml:"timeout"`
	// DefaultLifetime is assumed when the IdP omits expires_in (default 5m).
	DefaultLifetime Duration `yaml:"default_lifetime"`

	// Budget caps how many tokens this credential mints in a rolling window.
	Budget Budget `yaml:"budget"`
	// CostPerMint is what one token costs at the IdP, in dollars (e.g. 0.001).
	CostPerMint float64 `yaml:"cost_per_mint"`
}

// Route maps a destination to a credential.
type Route struct {
	Host       string   `yaml:"host"`        // exact or *.example.com; case- and port-insensitive
	PathPrefix string   `yaml:"path_prefix"` // optional
	Methods    []string `yaml:"methods"`     // optional; upper-cased by the loader
	Credential string   `yaml:"credential"`

	// Line is where the route starts in the file, for messages.
	Line int `yaml:"-"`
}

// Cache tunes the token cache.
type Cache struct {
	MaxTokens    int64    `yaml:"max_tokens"`    // default 100000
	ExpiryMargin Duration `yaml:"expiry_margin"` // default 30s
	RefreshAhead float64  `yaml:"refresh_ahead"` // default 0.2; 0 < x < 1
}

// Shutdown tunes graceful termination.
type Shutdown struct {
	// Delay is how long health reports NOT_SERVING before the listeners close,
	// so Envoy's health checks and load balancers stop sending first (default 0).
	Delay Duration `yaml:"delay"`
	// Drain is how long in-flight requests get to finish once the listeners close (default 10s).
	Drain Duration `yaml:"drain"`
}

// Secret is a string that never prints itself.
type Secret string

// String redacts the value so a Secret can be logged or formatted safely.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString redacts the value for %#v as well.
func (s Secret) GoString() string { return s.String() }

// Reveal returns the secret value; call it only where the value is sent to its IdP.
func (s Secret) Reveal() string { return string(s) }

// Duration is a time.Duration that reads Go duration strings ("30s", "1h").
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
