package config

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Ranges of the numeric settings, checked at load so that `validate`
// rejects what would otherwise pass and then fail at run time: a process
// that allocates itself out of memory, a timeout no IdP can meet, a token
// refreshed without end, a shutdown that hangs a rollout for hours.
const (
	// cache.max_tokens bounds the cache's keys (about 300 bytes each with
	// a small token), so it bounds the memory hostile broker clients can
	// make the cache hold. A million covers every credential plus the
	// broker's 400k remembered client keys.
	minCacheTokens = 1
	maxCacheTokens = 1_000_000

	// cache.expiry_margin. Entra's tokens live 60–90 minutes: a margin past
	// an hour makes such tokens unusable the moment they arrive.
	maxExpiryMargin = time.Hour

	// cache.refresh_ahead, the share of a token's usable life left when it is
	// refreshed. Above 0.9 a token is replaced after a tenth of its life or
	// sooner, which multiplies mints (and their cost) for no gain.
	minRefreshAhead = 0.01
	maxRefreshAhead = 0.9

	// cache.redis.timeout, one Redis operation. Below a millisecond every
	// operation times out and the fleet never shares; above 10 s a stalled
	// Redis holds up each miss that long before minting locally.
	minRedisTimeout = time.Millisecond
	maxRedisTimeout = 10 * time.Second

	// cache.redis.lock_ttl, the fleet mint lock, which is also how long
	// waiters wait for its holder's token. Below 100 ms no mint finishes
	// under the lock; minutes of waiting would stall a fleet behind a dead
	// holder.
	minLockTTL = 100 * time.Millisecond
	maxLockTTL = 5 * time.Minute

	// cache.redis.db. Redis's own limit is its `databases` setting; this
	// only catches a value that is no database number at all.
	maxRedisDB = 1<<16 - 1

	// timeout of one token request (credentials and broker upstreams). No
	// IdP across a network answers within less than 100 ms reliably ("1ns"
	// made every mint fail); past five minutes a hung IdP holds a mint, and
	// every Check waiting on it, longer than any caller waits.
	minMintTimeout = 100 * time.Millisecond
	maxMintTimeout = 5 * time.Minute

	// default_lifetime, assumed when the IdP sends no expires_in. It must
	// also exceed cache.expiry_margin (checked with the credential). A day
	// caps how long a token of unknown life is trusted.
	minDefaultLifetime = 10 * time.Second
	maxDefaultLifetime = 24 * time.Hour

	// budget.per, the rolling window of a mint budget. The in-process
	// counter remembers every mint of the longest window, so a window of
	// years would grow it for years.
	minBudgetWindow = time.Minute
	maxBudgetWindow = 365 * 24 * time.Hour
	// budget.mints: a billion a window is beyond any IdP's quota; more is
	// a typo.
	maxBudgetMints = 1_000_000_000

	// limit.per and limit.mints, the broker's token bucket per client.
	minRateWindow = time.Second
	maxRateWindow = 24 * time.Hour
	maxRateMints  = 1_000_000

	// cost_per_mint in dollars. Also rejects +Inf, which strconv accepts and
	// which would turn every cost metric into +Inf.
	maxCostPerMint = 1000.0

	// shutdown.delay and shutdown.drain. Kubernetes kills a pod 30 s after
	// SIGTERM by default; an hour (a typo for a minute) would hang every
	// rollout.
	maxShutdownDelay = 5 * time.Minute
	maxShutdownDrain = 5 * time.Minute

	// broker.negative_ttl: how long an IdP rejection is repeated from
	// memory. Minutes would keep refusing a client long after its secret
	// was fixed.
	maxNegativeTTL = 5 * time.Minute
)

// Sizes and counts.
const (
	// maxConfigFile bounds the configuration file Load reads, so a path
	// such as /dev/zero fails instead of exhausting memory. 100,000
	// credentials with one route each are about 20 MB of YAML.
	maxConfigFile = 48 << 20

	// maxScalar bounds every value in the file after ${VAR} expansion: a
	// secret, a URL and a scope are all far shorter, and a 10 MB
	// environment variable must not become a 10 MB header.
	maxScalar = maxSecretFile

	// maxKey bounds a mapping key: credential and upstream names become
	// metric labels and log fields, param names form fields.
	maxKey = 1 << 10

	// MaxHeaderValue bounds the header a static credential sets: its value
	// in its format. nginx refuses a request line or header longer than
	// 8 KiB by default (large_client_header_buffers), and the value is sent
	// on every request, so a bigger one would fail upstream or cost on each.
	MaxHeaderValue = 8 << 10

	// Entries of the lists and mappings in the file. The file is the
	// operator's, but each entry costs memory for the life of the process
	// and work at every reload; these are far above any real configuration.
	// 100,000 credentials and routes is a supported size (BENCHMARKS.md
	// "Memory: 100k cached credentials"), and what the cache holds by default.
	maxCredentials = 100_000
	maxRoutes      = 100_000
	maxUpstreams   = 1_000
	maxListEntries = 1_000 // every other list or mapping: scopes, params, allowed_sources, addrs, …
)

// maxEntries is how many entries the list or mapping at path may hold.
func maxEntries(path string) int {
	switch path {
	case "credentials":
		return maxCredentials
	case "routes":
		return maxRoutes
	case "broker.upstreams":
		return maxUpstreams
	}
	return maxListEntries
}

func inRange(v Duration, lo, hi time.Duration) bool { return v.D() >= lo && v.D() <= hi }

// checkDuration requires lo <= v <= hi.
func (d *decoder) checkDuration(v Duration, lo, hi time.Duration, field string) bool {
	return d.check(inRange(v, lo, hi), field, "must be between %s and %s", short(lo), short(hi))
}

// checkInt requires lo <= v <= hi.
func (d *decoder) checkInt(v, lo, hi int64, field string) bool {
	return d.check(v >= lo && v <= hi, field, "must be between %d and %d", lo, hi)
}

// checkFloat requires lo <= v <= hi, which NaN never is.
func (d *decoder) checkFloat(v, lo, hi float64, field string) bool {
	return d.check(v >= lo && v <= hi, field, "must be between %g and %g", lo, hi)
}

// short writes a duration without the zero units time.Duration.String
// appends: 5m, 720h, 100ms.
func short(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// HeaderValueProblem says what keeps s from being sent as a header value
// (RFC 9110 §5.5: no control characters but tab), or "" when nothing does.
// It never quotes s.
func HeaderValueProblem(s string) string {
	if !utf8.ValidString(s) {
		// Envoy's CheckResponse carries header values as proto3 strings.
		return "not valid UTF-8"
	}
	if i := strings.IndexFunc(s, func(r rune) bool { return r != '\t' && unicode.IsControl(r) }); i >= 0 {
		return fmt.Sprintf("holds a control character (byte %d): not a valid header value", i)
	}
	return ""
}
