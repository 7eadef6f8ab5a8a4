// Package broker is a caching OAuth 2.0 token endpoint: it answers client
// credentials requests (RFC 6749 §4.4) from clients that never cache, so
// one token is minted per lifetime instead of one per call.
//
// A token is cached per client id, upstream and normalized request
// parameters, in the same cache.Tokens (and single-flight) as the ext_authz
// side. Each cached token carries a keyed hash of the secret that minted it
// (binding.go); a request whose secret hashes differently is never served
// that token: it is forwarded to the IdP, which decides. What the broker
// remembers about clients is bounded and evicts (memory.go).
package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/tokenbroker/tokenbroker/budget"
	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
	"github.com/tokenbroker/tokenbroker/internal/credlabel"
)

// NamePrefix starts the cache.Key.Name of every broker key. The rest is
// the upstream name: metric labels stay bounded and carry no client id.
const NamePrefix = "broker:"

// Options configure a Broker.
type Options struct {
	Config  config.Broker
	Tokens  *cache.Tokens
	Meter   *budget.Meter // per-client budgets and mint counts; nil: none
	Logger  *zap.Logger
	HMACKey []byte // broker.binding_key_file; nil: derived from FleetKeys
	// FleetKeys are the fleet's encryption keys (cache.redis), encrypting
	// key first. Without HMACKey the binding keys are derived from them, so
	// replicas sharing Redis share bindings; none: a random key per process.
	FleetKeys [][]byte
	// Registerer receives the broker's metrics (nil: not registered).
	Registerer prometheus.Registerer
}

// Broker is the token endpoint as an http.Handler.
type Broker struct {
	cfg      config.Broker
	tokens   *cache.Tokens
	meter    *budget.Meter
	log      *zap.Logger
	bindKeys bindingKeys
	ups      []*upstream
	direct   singleflight.Group // forwards outside the cache, per key and secret
	results  *credlabel.CounterVec
	health   *upstreamHealth
	requests atomic.Int64 // token requests that parsed, for the status chart

	mu  sync.Mutex // guards mem and the fields of client and keyState it says
	mem memory
}

type upstream struct {
	config.BrokerUpstream
	idx       int
	keyName   string       // NamePrefix + Name: one string for every key of the upstream
	unlimited *bucket      // the bucket of all its clients when it sets no limit
	cached    atomic.Int64 // answers from cache, for totals that outlive evicted clients
}

// UpstreamTotal is one upstream's answers from cache since the start, over
// every client, listed on the status page or not.
type UpstreamTotal struct {
	Upstream    string
	Cached      int64
	CostPerMint float64
}

// Totals returns each upstream's totals, in configuration order.
func (b *Broker) Totals() []UpstreamTotal {
	out := make([]UpstreamTotal, len(b.ups))
	for i, u := range b.ups {
		out[i] = UpstreamTotal{Upstream: u.Name, Cached: u.cached.Load(), CostPerMint: u.CostPerMint}
	}
	return out
}

// keyState is what the broker remembers about one cache key. It exists only
// once the IdP has accepted a secret for the key. There is one per client
// in the common case, so it is 64 bytes: what few keys have (a refusal, a
// seeding in progress) is kept beside the table (memory.refused, seeding).
type keyState struct {
	id     string // the cache key ID (the same string the cache holds)
	client *client
	// guarded by Broker.mu
	good    string    // binding of the last secret the IdP accepted ("" while the first is being seeded); shared with the cached token's
	sibling *keyState // the client's next key
	links   links[keyState]
}

func (ks *keyState) lru() *links[keyState] { return &ks.links }

// failedLocked is the binding of the last secret the IdP rejected for ks, ""
// if none; b.mu is held.
func (b *Broker) failedLocked(ks *keyState) string {
	if rj := b.mem.refused[ks]; rj != nil {
		return rj.bind
	}
	return ""
}

// rejection is an IdP's refusal, kept to answer retries.
type rejection struct {
	status     int
	code, desc string
	retryAfter time.Duration
	until      time.Time
	bind       string // the refused secret's binding, when kept for a key
}

// maxRejectionText bounds the IdP error code and description kept with a
// remembered refusal, so the negative table's size does not depend on what
// an IdP (or a proxy in front of it) puts in its error bodies.
const maxRejectionText = 1 << 10

// New builds a Broker. Its metrics are registered with opts.Registerer.
func New(opts Options) (*Broker, error) {
	if opts.Tokens == nil {
		return nil, errors.New("broker: no token cache")
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	keys, err := newBindingKeys(opts.HMACKey, opts.FleetKeys)
	if err != nil {
		return nil, err
	}
	b := &Broker{
		cfg: opts.Config, tokens: opts.Tokens, meter: opts.Meter, log: opts.Logger, bindKeys: keys,
		health: newUpstreamHealth(opts.Logger),
		results: credlabel.NewCounterVec(credlabel.For(opts.Registerer), prometheus.CounterOpts{
			Name: "tokenbroker_broker_requests_total",
			Help: "Token endpoint broker requests by upstream and result (cached, minted, forwarded, rejected, limited, invalid).",
		}, []string{"upstream", "result"}),
	}
	b.newMemory()
	for i, u := range opts.Config.Upstreams {
		if u.Name == "" {
			u.Name = fmt.Sprintf("upstream-%d", i)
		}
		up := &upstream{BrokerUpstream: u, idx: i, keyName: NamePrefix + u.Name}
		up.unlimited = &bucket{up: up}
		b.ups = append(b.ups, up)
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(b.results); err != nil {
			return nil, fmt.Errorf("broker: metrics: %w", err)
		}
	}
	return b, nil
}

// Owns reports whether key is one of the broker's cache keys.
func Owns(key cache.Key) bool { return strings.HasPrefix(key.Name, NamePrefix) }

// MayMint is the cache's gate for broker keys: the client's mint limit
// (token bucket), then its budget. A key it does not know is refused.
func (b *Broker) MayMint(key cache.Key) error {
	b.mu.Lock()
	ks, _ := b.mem.keys.peek(key.ID)
	seeding := b.mem.seeding[ks] > 0
	b.mu.Unlock()
	if ks == nil {
		return errors.New("unknown broker key")
	}
	if seeding {
		return nil // the token was minted (and paid for) by forward
	}
	return b.take(ks.client)
}

func (b *Broker) take(c *client) error {
	if wait, ok := c.bucket.take(b.tokens.Now()); !ok {
		return &LimitError{RetryAfter: wait}
	}
	if b.meter != nil {
		return b.meter.Take(c.meterName())
	}
	return nil
}

// check is take without spending: would a mint be allowed now?
func (b *Broker) check(c *client) error {
	if wait, ok := c.bucket.peek(b.tokens.Now()); !ok {
		return &LimitError{RetryAfter: wait}
	}
	if b.meter != nil {
		return b.meter.Check(c.meterName())
	}
	return nil
}

// charge counts a mint that already happened against the client's limits.
func (b *Broker) charge(c *client) {
	c.bucket.take(b.tokens.Now())
	if b.meter != nil {
		_ = b.meter.Take(c.meterName()) // the token exists: an over-budget answer changes nothing
	}
}

// LimitError refuses a mint because the client's token bucket is empty.
type LimitError struct{ RetryAfter time.Duration }

func (e *LimitError) Error() string {
	return fmt.Sprintf("mint limit reached; retry after %s", e.RetryAfter.Round(time.Second))
}

func (b *Broker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "invalid_request", "use POST", 0)
		return
	}
	req, status, code, desc := b.parse(w, r)
	if req == nil {
		b.results.WithLabelValues("none", "invalid").Inc()
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Basic realm="tokenbroker"`)
		}
		writeError(w, status, code, desc, 0)
		return
	}
	b.requests.Add(1)
	b.serve(r.Context(), w, req)
}

// Requests is the number of well-formed token requests answered so far.
func (b *Broker) Requests() int64 { return b.requests.Load() }

func (b *Broker) serve(ctx context.Context, w http.ResponseWriter, req *request) {
	key := req.cacheKey()
	bind := b.bindKeys.bind(req)
	now := b.tokens.Now()
	b.mu.Lock()
	ks, _ := b.mem.keys.get(key.ID)
	if ks != nil {
		key.ID = ks.id // the remembered string: the cache holds that one
		if ks.good != "" && same(ks.good, bind) {
			// The remembered string too: a token this request mints (a
			// refresh) then shares it instead of holding a second copy.
			bind = ks.good
		}
	}
	rj := b.negativeLocked(key.ID, bind, now)
	b.mu.Unlock()
	if rj != nil {
		b.reject(w, req.up, clientOf(ks), rj)
		return
	}
	if ks == nil {
		// Nothing is known of this key, so nothing is remembered until the
		// IdP accepts the secret. A token bound to this secret, here or in
		// the fleet's tier, is such proof: another replica's mint.
		tok, ok := b.tokens.Lookup(ctx, key)
		if !ok || !b.bindKeys.matches(tok.Binding, req, bind) {
			b.forward(ctx, w, req, key, bind)
			return
		}
		ks = b.adopt(key, req, bind)
	}
	c := ks.client
	c.requests.Add(1)

	if tok, ok := b.tokens.Peek(key); ok {
		if !b.bindKeys.matches(tok.Binding, req, bind) {
			b.forward(ctx, w, req, key, bind)
			return
		}
		// Get rather than serving tok: it counts the hit and refreshes ahead.
		if tok, err := b.tokens.Get(ctx, key, b.source(req, key.ID, bind, ks)); err == nil && b.bindKeys.matches(tok.Binding, req, bind) {
			b.served(w, c, tok, req, "cached")
			return
		}
	}

	b.mu.Lock()
	good := ks.good
	b.mu.Unlock()
	if good == "" || !same(good, bind) {
		// Only a secret the IdP has accepted for this key shares the cache's
		// mint: an unproven one goes to the IdP alone, so a wrong secret can
		// neither fail nor delay the mint of the right one.
		b.forward(ctx, w, req, key, bind)
		return
	}
	before := c.mints.Load()
	tok, err := b.tokens.Get(ctx, key, b.source(req, key.ID, bind, ks))
	switch {
	case err == nil && b.bindKeys.matches(tok.Binding, req, bind):
		result := "cached"
		if c.mints.Load() != before {
			result = "minted"
		}
		b.served(w, c, tok, req, result)
	case err == nil:
		// A concurrent request with another secret led the mint.
		b.forward(ctx, w, req, key, bind)
	default:
		b.failed(ctx, w, req, key, bind, c, ks, err)
	}
}

func clientOf(ks *keyState) *client {
	if ks == nil {
		return nil
	}
	return ks.client
}

// failed answers a request whose token request returned err. c is nil for a
// client the IdP never accepted; ks is nil when the answer must not depend on
// the key's state (a forward's own failure).
func (b *Broker) failed(ctx context.Context, w http.ResponseWriter, req *request, key cache.Key, bind string, c *client, ks *keyState, err error) {
	now := b.tokens.Now()
	var lim *LimitError
	var ex *budget.ExceededError
	switch {
	case errors.As(err, &lim):
		b.refused(c, true) // only a known client has a limit
		b.results.WithLabelValues(req.up.Name, "limited").Inc()
		writeError(w, http.StatusTooManyRequests, "temporarily_unavailable", "mint limit reached for this client", lim.RetryAfter)
		return
	case errors.As(err, &ex):
		b.refused(c, true) // only a known client has a budget
		b.results.WithLabelValues(req.up.Name, "limited").Inc()
		writeError(w, http.StatusTooManyRequests, "temporarily_unavailable", "mint budget used up for this client", ex.RetryAt.Sub(now))
		return
	}
	if ks != nil {
		b.mu.Lock()
		failed, rj := b.failedLocked(ks), b.mem.refused[ks]
		b.mu.Unlock()
		if failed != "" && !same(failed, bind) {
			// Someone else's secret failed (or put the key in back-off): this
			// request's own secret deserves its own answer from the IdP.
			b.forward(ctx, w, req, key, bind)
			return
		}
		if rj != nil {
			b.reject(w, req.up, c, rj)
			return
		}
	}
	var ue *cache.UnavailableError
	retry := time.Duration(0)
	if errors.As(err, &ue) && !ue.RetryAt.IsZero() {
		retry = ue.RetryAt.Sub(now)
	}
	b.results.WithLabelValues(req.up.Name, "rejected").Inc()
	b.health.failing(req.up.Name, err, now)
	writeError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "the identity provider did not issue a token", retry)
}

func (b *Broker) reject(w http.ResponseWriter, up *upstream, c *client, rj *rejection) {
	if c != nil {
		b.refused(c, false)
	}
	b.results.WithLabelValues(up.Name, "rejected").Inc()
	writeError(w, rj.status, rj.code, rj.desc, rj.retryAfter)
}

// forward asks the IdP directly, outside the cache, with this request's
// secret. Identical concurrent forwards share one IdP request. A token
// obtained this way is returned, and cached when the key has none.
func (b *Broker) forward(ctx context.Context, w http.ResponseWriter, req *request, key cache.Key, bind string) {
	ch := b.direct.DoChan(key.ID+"/"+bind, func() (any, error) {
		fctx := context.WithoutCancel(ctx) // shared by every caller in the flight
		// A flight for this secret may have just finished and cached its
		// token, or another replica may have.
		if tok, ok := b.tokens.Lookup(fctx, key); ok && b.bindKeys.matches(tok.Binding, req, bind) {
			b.adopt(key, req, bind)
			return tok, nil
		}
		// Check the limits of a client already known, but charge only a
		// token actually issued: a stranger's wrong secrets must not use up
		// the client's mints.
		b.mu.Lock()
		c, _ := b.mem.clients.get(clientKey(req))
		ks, _ := b.mem.keys.peek(key.ID)
		b.mu.Unlock()
		if c != nil {
			if err := b.check(c); err != nil {
				return nil, err
			}
		}
		tok, latency, err := b.mint(fctx, req, bind, key.ID, ks)
		if err != nil {
			return nil, err
		}
		ks = b.adopt(key, req, "")
		b.accepted(ks, latency)
		b.charge(ks.client)
		if _, ok := b.tokens.Peek(key); !ok {
			// Nothing cached: this token is what the next requests get.
			b.seeding(ks, 1)
			_, _ = b.tokens.Get(fctx, key, seedSource(tok))
			b.seeding(ks, -1)
		}
		// Only now is this secret the proven one, so a request arriving
		// meanwhile joins this flight rather than minting in the cache.
		b.mu.Lock()
		ks.good = bind
		b.mu.Unlock()
		return tok, nil
	})
	var res singleflight.Result
	select {
	case res = <-ch:
	case <-ctx.Done():
		return
	}
	b.mu.Lock()
	c, _ := b.mem.clients.peek(clientKey(req)) // nil for a client never accepted
	b.mu.Unlock()
	if res.Err != nil {
		var idp *credential.IdPError
		if errors.As(res.Err, &idp) && !idp.Temporary() {
			b.reject(w, req.up, c, rejectionFrom(idp, b.cfg.NegativeTTL.D(), b.tokens.Now()))
			return
		}
		// Our own refusal answers this request; the key's back-off state
		// (someone else's) must not send it round again.
		b.failed(ctx, w, req, key, bind, c, nil, res.Err)
		return
	}
	tok := res.Val.(credential.Token)
	if c == nil {
		c = b.adopt(key, req, "").client // evicted meanwhile: the IdP did accept
	}
	c.forwarded.Add(1)
	b.served(w, c, tok, req, "forwarded")
}

// adopt remembers key and its client once the IdP has accepted a secret
// for it; good is the binding to remember as proven ("" to set it later).
func (b *Broker) adopt(key cache.Key, req *request, good string) *keyState {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ks, ok := b.mem.keys.get(key.ID); ok {
		if good != "" {
			ks.good = good
		}
		return ks
	}
	c, ok := b.mem.clients.get(clientKey(req))
	if !ok {
		c = newClient(req.clientID, req.up, b.tokens.Now())
		b.mem.clients.add(c) // keyed by the client's own copy of the id
		if b.meter != nil && (req.up.Budget.Mints > 0 || req.up.CostPerMint > 0) {
			// A name without a policy is counted with no limit and no price:
			// the policy, one per client, is kept only when it says something.
			b.meter.Set(c.meterName(), budget.Policy{
				Limit: req.up.Budget.Mints, Window: req.up.Budget.Per.D(), Enforce: req.up.Budget.Enforce,
				CostPerMint: req.up.CostPerMint, Label: NamePrefix + req.up.Name,
			})
		}
	}
	ks := &keyState{id: key.ID, client: c, good: good}
	c.addKey(ks)
	b.mem.keys.add(ks)
	return ks
}

// seedSource hands the cache a token minted outside it.
type seedSource credential.Token

func (s seedSource) Token(context.Context) (credential.Token, error) { return credential.Token(s), nil }

// served writes the RFC 6749 §5.1 answer for tok.
func (b *Broker) served(w http.ResponseWriter, c *client, tok credential.Token, req *request, result string) {
	if result == "cached" {
		c.cached.Add(1)
		req.up.cached.Add(1)
	}
	b.results.WithLabelValues(req.up.Name, result).Inc()
	left := int64(math.Floor(tok.Expiry.Sub(b.tokens.Now()).Seconds()))
	body := map[string]any{
		"access_token": tok.Value,
		"token_type":   cmpOr(tok.Type, "Bearer"),
		"expires_in":   max(left, 0),
	}
	if s := cmpOr(tok.Scope, req.params.Get("scope")); s != "" {
		body["scope"] = s
	}
	writeJSON(w, http.StatusOK, body, 0)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// negativeLocked returns the remembered refusal of this key and secret; b.mu is held.
func (b *Broker) negativeLocked(keyID, bind string, now time.Time) *rejection {
	nk := negativeKey(keyID, bind)
	rj, ok := b.mem.negative.Get(nk)
	if !ok {
		return nil
	}
	if !now.Before(rj.until) {
		b.mem.negative.Remove(nk)
		return nil
	}
	return rj
}

// rememberLocked negative-caches rj for this key and secret; b.mu is held.
// The table is an LRU: a flood of refusals pushes out older ones.
func (b *Broker) rememberLocked(keyID, bind string, rj *rejection) {
	b.mem.negative.Add(negativeKey(keyID, bind), rj)
}

func writeError(w http.ResponseWriter, status int, code, desc string, retry time.Duration) {
	body := map[string]string{"error": code}
	if desc != "" {
		body["error_description"] = desc
	}
	writeJSON(w, status, body, retry)
}

func writeJSON(w http.ResponseWriter, status int, v any, retry time.Duration) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	if retry > 0 {
		h.Set("Retry-After", strconv.FormatInt(int64(math.Ceil(retry.Seconds())), 10))
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
