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
	ForwardAuth   ForwardAuth            `yaml:"forward_auth"`
	Broker        Broker                 `yaml:"broker"`
	Admin         Admin                  `yaml:"admin"`
	Tracing       *Tracing               `yaml:"tracing"` // OpenTelemetry; nil when absent (tracing.go)

	// File is the path the configuration was read from ("" when parsed from memory).
	File string `yaml:"-"`
}

// Listen holds listener addresses; an empty address turns that listener off.
type Listen struct {
	GRPC  string `yaml:"grpc"`  // ext_authz v3 + grpc.health.v1 + reflection
	Admin string `yaml:"admin"` // /healthz /readyz /metrics

	// TLS, when cert_file and key_file are set, serves every listener that
	// hands out tokens over TLS; client_ca_file makes client certificates
	// signed by that CA mandatory. Files are re-read when they change.
	TLS ListenTLS `yaml:"tls"`
	// HTTP is the forward-auth listener (nginx, Caddy, Traefik, Envoy
	// http_service, Istio envoyExtAuthzHttp). Off unless set, so existing
	// configurations do not open a new port.
	HTTP string `yaml:"http"`
	// Broker is the token-endpoint broker (POST broker.path); off when empty.
	Broker string `yaml:"broker"`
}

// ForwardAuth tunes the HTTP forward-auth server.
type ForwardAuth struct {
	// EnvoyPathPrefix marks requests from Envoy's http_service (and Istio's
	// envoyExtAuthzHttp), which append the original path to a path_prefix:
	// under it only the request line and Host count and every X-Forwarded-*
	// or X-Original-* header is ignored. Default /envoy; "" turns it off.
	EnvoyPathPrefix string `yaml:"envoy_path_prefix"`
}

// ListenTLS is the server side of TLS for tokenbroker's own listeners.
type ListenTLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"` // optional: require and verify client certificates
}

// Enabled reports whether TLS is configured.
func (t ListenTLS) Enabled() bool { return t.CertFile != "" }

// Credential describes one token source.
type Credential struct {
	// Name is the key under `credentials:`; filled in by the loader.
	Name string `yaml:"-"`

	Type             string            `yaml:"type"` // client_credentials | token_exchange | jwt_bearer | static
	TokenURL         string            `yaml:"token_url"`
	ClientID         string            `yaml:"client_id"`
	ClientSecret     Secret            `yaml:"client_secret"`
	ClientSecretFile string            `yaml:"client_secret_file"`
	AuthMethod       string            `yaml:"auth_method"` // client_secret_basic (default) | client_secret_post | private_key_jwt | client_secret_jwt | tls_client_auth | none
	Scopes           []string          `yaml:"scopes"`
	Audience         string            `yaml:"audience"`
	Params           map[string]string `yaml:"params"`
	Header           string            `yaml:"header"` // default Authorization
	Format           string            `yaml:"format"` // default "Bearer {token}"

	// Provider presets fill token_url and the parameter style of a known IdP:
	// auth0 (domain), entra (tenant), okta (domain), keycloak (domain, realm).
	// Explicitly set fields win.
	Provider string `yaml:"provider"`
	Tenant   string `yaml:"tenant"`
	Domain   string `yaml:"domain"`
	Realm    string `yaml:"realm"`

	// Resource is sent as the RFC 8707 resource parameter.
	Resource string `yaml:"resource"`

	// private_key_jwt: the PEM key (RSA or EC) signing client assertions, its
	// kid, the JWS algorithm (RS256 default for RSA, ES256 for EC; PS256) and
	// the assertion's aud (default token_url).
	PrivateKeyFile    string `yaml:"private_key_file"`
	KeyID             string `yaml:"key_id"`
	SigningAlg        string `yaml:"signing_alg"`
	AssertionAudience string `yaml:"assertion_audience"`
	// CertificateFile, optional, is the PEM certificate of that key: its
	// thumbprints go in the x5t and x5t#S256 headers (Entra ID wants them).
	CertificateFile string `yaml:"certificate_file"`

	// tls_client_auth (RFC 8705): client certificate and key for the token
	// endpoint connection, and an optional CA bundle to verify the IdP.
	ClientCertFile string `yaml:"client_cert_file"`
	ClientKeyFile  string `yaml:"client_key_file"`
	CAFile         string `yaml:"ca_file"`

	// token_exchange (RFC 8693): the subject token, read at every mint.
	SubjectTokenFile   string `yaml:"subject_token_file"`
	SubjectTokenType   string `yaml:"subject_token_type"`   // default urn:ietf:params:oauth:token-type:jwt
	RequestedTokenType string `yaml:"requested_token_type"` // optional

	// jwt_bearer (RFC 7523 §2.1): the assertion, read at every mint.
	AssertionFile string `yaml:"assertion_file"`

	// static: a fixed value (e.g. an API key) from value (may be ${ENV}) or value_file.
	Value     Secret `yaml:"value"`
	ValueFile string `yaml:"value_file"`

	// AllowedSources limits which callers may use this credential: SPIFFE IDs
	// (exact, or "*" for one path segment) matched against the source
	// principal, and CIDRs matched against the source address. Empty allows
	// every caller.
	AllowedSources []string `yaml:"allowed_sources"`

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
	// RemoveHeaders are incoming headers removed before the request goes out
	// (e.g. a caller's own x-api-key); never the header the credential sets.
	RemoveHeaders []string `yaml:"remove_headers"`

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
