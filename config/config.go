// Package config loads and validates tokenbroker's YAML configuration.
//
// Every problem is reported with the file, line and field it concerns, and
// secret values are never echoed back in an error.
package config

import (
	"fmt"
	"time"
)

// Config is the whole configuration file after loading, defaulting and validation.
type Config struct {
	Listen        Listen                 `yaml:"listen"`
	DefaultAction string                 `yaml:"default_action"` // "deny" (default) or "allow"
	Credentials   map[string]*Credential `yaml:"credentials"`
	Routes        []Route                `yaml:"routes"`
	Cache         Cache                  `yaml:"cache"`
	Shutdown      Shutdown               `yaml:"shutdown"`

	// File is the path the configuration was read from ("" when parsed from memory).
	File string `yaml:"-"`
}

// Listen holds listener addresses; an empty address turns that listener off.
type Listen struct {
	GRPC  string `yaml:"grpc"`  // ext_authz v3 + grpc.health.v1 + reflection
	Admin string `yaml:"admin"` // /healthz /readyz /metrics
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

	// Redis, when set, shares tokens across a fleet of replicas (L2).
	Redis *Redis `yaml:"redis"`
}

// Redis configures the fleet-wide shared token cache.
type Redis struct {
	// Addrs: one address is a single node, several a Redis Cluster; with
	// MasterName they are Sentinel addresses.
	Addrs              []string `yaml:"addrs"`
	MasterName         string   `yaml:"master_name"`
	Username           string   `yaml:"username"`
	Password           Secret   `yaml:"password"`
	PasswordFile       string   `yaml:"password_file"`
	DB                 int      `yaml:"db"`
	TLS                RedisTLS `yaml:"tls"`
	KeyPrefix          string   `yaml:"key_prefix"`           // default "tokenbroker:"
	EncryptionKeysFile string   `yaml:"encryption_keys_file"` // required: one base64 32-byte key per line
	Timeout            Duration `yaml:"timeout"`              // per operation, default 50ms
	LockTTL            Duration `yaml:"lock_ttl"`             // fleet mint lock, default 10s

	// EncryptionKeys are the decoded keys of EncryptionKeysFile, the
	// encrypting key first; filled in by the loader.
	EncryptionKeys Keys `yaml:"-"`
}

// Keys are raw encryption keys that never print themselves.
type Keys [][]byte

// String redacts the keys so a Config can be logged or formatted safely.
func (k Keys) String() string { return fmt.Sprintf("[%d keys redacted]", len(k)) }

// GoString redacts the keys for %#v as well.
func (k Keys) GoString() string { return k.String() }

// RedisTLS configures TLS to Redis.
type RedisTLS struct {
	Enabled    bool   `yaml:"enabled"`
	CAFile     string `yaml:"ca_file"`     // default: the system roots
	ServerName string `yaml:"server_name"` // default: the host of the address
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
