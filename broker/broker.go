// Package broker is a caching OAuth 2.0 token endpoint: it answers client
// credentials requests (RFC 6749 §4.4) from clients that never cache, so
// one token is minted per lifetime instead of one per call.
//
// A token is cached per client id, upstream and normalized request
// parameters, in the same cache.Tokens (and single-flight) as the ext_authz
// side. Each cached token carries a keyed hash of the secret that minted it;
// a request whose secret hashes differently is never served that token: it
// is forwarded to the IdP, which decides.
package broker

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"mime"
	"net/http"
	"net/url"
	"path"
	"slices"
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

const (
	maxFormBytes = 64 << 10
	// maxClients bounds the per-client bookkeeping a flood of made-up client
	// ids could grow; past it, new clients are refused with 503.
	maxClients  = 100000
	maxKeys     = 4 * maxClients // (client, parameters) combinations remembered
	maxNegative = 10000
	// NamePrefix starts the cache.Key.Name of every broker key. The rest is
	// the upstream name: metric labels stay bounded and carry no client id.
	NamePrefix = "broker:"
)

// Options configure a Broker.
type Options struct {
	Config  config.Broker
	Tokens  *cache.Tokens
	Meter   *budget.Meter // per-client budgets and mint counts; nil: none
	Logger  *zap.Logger
	HMACKey []byte // keys the secret hash; nil: random per process
	// Registerer receives the broker's metrics (nil: not registered).
	Registerer prometheus.Registerer
}

// Broker is the token endpoint as an http.Handler.
type Broker struct {
	cfg     config.Broker
	tokens  *cache.Tokens
	meter   *budget.Meter
	log     *zap.Logger
	hmacKey []byte
	ups     []*upstream
	direct  singleflight.Group // forwards outside the cache, per key and secret
	results *credlabel.CounterVec

	mu       sync.Mutex           // guards clients, keys and negative
	clients  map[string]*client   // by upstream name + "\x00" + client id
	keys     map[string]*keyState // by cache key ID
	negative map[string]*rejection
}

type upstream struct {
	config.BrokerUpstream
	idx int
}

// keyState is what the broker remembers about one cache key.
type keyState struct {
	key    string // cache key ID
	client *client
	params string // normalized parameters, for the status page (no secret)
	good   string // binding of the last secret the IdP accepted
	failed string // binding of the last secret the IdP rejected
	reject *rejection
	seeds  atomic.Int32 // seedings in progress: their cache "mint" is free
}

// rejection is an IdP's refusal, kept to answer retries.
type rejection struct {
	status     int
	code, desc string
	retryAfter time.Duration
	until      time.Time
}

// New builds a Broker. Its metrics are registered with opts.Registerer.
func New(opts Options) (*Broker, error) {
	if opts.Tokens == nil {
		return nil, errors.New("broker: no token cache")
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	key := opts.HMACKey
	if len(key) == 0 {
		key = make([]byte, 32)
		_, _ = rand.Read(key)
	}
	b := &Broker{
		cfg: opts.Config, tokens: opts.Tokens, meter: opts.Meter, log: opts.Logger, hmacKey: key,
		clients: make(map[string]*client), keys: make(map[string]*keyState), negative: make(map[string]*rejection),
		results: credlabel.NewCounterVec(credlabel.For(opts.Registerer), prometheus.CounterOpts{
			Name: "tokenbroker_broker_requests_total",
			Help: "Token endpoint broker requests by upstream and result (cached, minted, forwarded, rejected, limited, invalid).",
		}, []string{"upstream", "result"}),
	}
	for i, u := range opts.Config.Upstreams {
		if u.Name == "" {
			u.Name = fmt.Sprintf("upstream-%d", i)
		}
		b.ups = append(b.ups, &upstream{BrokerUpstream: u, idx: i})
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
	ks := b.keys[key.ID]
	b.mu.Unlock()
	if ks == nil {
		return errors.New("unknown broker key")
	}
	if ks.seeds.Load() > 0 {
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

// request is a parsed token request. secret never leaves this package.
type request struct {
	clientID, secret string
	basic            bool
	params           url.Values // pass_params only, normalized
	up               *upstream
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
	b.serve(r.Context(), w, req)
}

// parse reads an RFC 6749 §4.4 request with client_secret_basic or client_secret_post.
func (b *Broker) parse(w http.ResponseWriter, r *http.Request) (*request, int, string, string) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		return nil, 400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded"
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return nil, 400, "invalid_request", "malformed form body"
	}
	form := r.PostForm
	for k, v := range form {
		if len(v) > 1 {
			return nil, 400, "invalid_request", "parameter " + printable(k) + " repeated"
		}
	}
	req := &request{}
	if r.Header.Get("Authorization") != "" {
		user, pass, ok := r.BasicAuth()
		if !ok {
			return nil, 401, "invalid_client", "Authorization header is not HTTP Basic"
		}
		if form.Has("client_secret") {
			return nil, 400, "invalid_request", "more than one client authentication method used"
		}
		id, err1 := url.QueryUnescape(user)
		secret, err2 := url.QueryUnescape(pass)
		if err1 != nil || err2 != nil {
			return nil, 401, "invalid_client", "Basic credentials are not form-urlencoded"
		}
		if fid := form.Get("client_id"); fid != "" && fid != id {
			return nil, 400, "invalid_request", "client_id in body differs from Basic credentials"
		}
		req.clientID, req.secret, req.basic = id, secret, true
	} else {
		req.clientID, req.secret = form.Get("client_id"), form.Get("client_secret")
	}
	if req.clientID == "" || req.secret == "" {
		return nil, 401, "invalid_client", "client authentication required"
	}
	switch form.Get("grant_type") {
	case "client_credentials":
	case "":
		return nil, 400, "invalid_request", "grant_type is required"
	default:
		return nil, 400, "unsupported_grant_type", "only client_credentials is supported"
	}
	for _, u := range b.ups {
		if u.matches(req.clientID) {
			req.up = u
			break
		}
	}
	if req.up == nil {
		return nil, 401, "invalid_client", "no upstream serves this client"
	}
	req.params = url.Values{}
	for _, p := range req.up.PassParams {
		if v := normalize(p, form.Get(p)); v != "" {
			req.params.Set(p, v)
		}
	}
	return req, 0, "", ""
}

func (u *upstream) matches(id string) bool {
	if len(u.ClientIDs) == 0 {
		return true
	}
	for _, g := range u.ClientIDs {
		if ok, _ := path.Match(g, id); ok {
			return true
		}
	}
	return false
}

// normalize makes equivalent requests share a key: scope is a set (RFC 6749
// §3.3), other values lose surrounding white space.
func normalize(param, v string) string {
	if param != "scope" {
		return strings.TrimSpace(v)
	}
	s := strings.Fields(v)
	slices.Sort(s)
	return strings.Join(slices.Compact(s), " ")
}

// cacheKey is a hash of everything that decides which token the IdP issues.
func (req *request) cacheKey() cache.Key {
	h := sha256.New()
	put := func(s string) { fmt.Fprintf(h, "%d:%s", len(s), s) }
	put("tokenbroker.broker.v1")
	put(req.up.Name)
	put(req.up.TokenURL)
	put(req.clientID)
	put(req.params.Encode()) // Encode sorts by key
	return cache.Key{ID: hex.EncodeToString(h.Sum(nil)), Name: NamePrefix + req.up.Name}
}

// binding is the keyed hash of the client's secret stored with its token.
func (b *Broker) binding(req *request) string {
	m := hmac.New(sha256.New, b.hmacKey)
	m.Write([]byte(req.clientID))
	m.Write([]byte{0})
	m.Write([]byte(req.secret))
	return hex.EncodeToString(m.Sum(nil))
}

func same(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

func (b *Broker) serve(ctx context.Context, w http.ResponseWriter, req *request) {
	key := req.cacheKey()
	bind := b.binding(req)
	ks, c, err := b.state(key, req)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "temporarily_unavailable", err.Error(), time.Minute)
		return
	}
	c.requests.Add(1)
	now := b.tokens.Now()
	if rj := b.negativeFor(key.ID, bind, now); rj != nil {
		b.reject(w, c, rj, now)
		return
	}

	if tok, ok := b.tokens.Peek(key); ok {
		if !same(tok.Binding, bind) {
			b.forward(ctx, w, req, key, bind, c, ks)
			return
		}
		// Get rather than serving tok: it counts the hit and refreshes ahead.
		if tok, err := b.tokens.Get(ctx, key, b.source(req, bind, ks)); err == nil && same(tok.Binding, bind) {
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
		b.forward(ctx, w, req, key, bind, c, ks)
		return
	}
	before := c.mints.Load()
	tok, err := b.tokens.Get(ctx, key, b.source(req, bind, ks))
	switch {
	case err == nil && same(tok.Binding, bind):
		result := "cached"
		if c.mints.Load() != before {
			result = "minted"
		}
		b.served(w, c, tok, req, result)
	case err == nil:
		// A concurrent request with another secret led the mint.
		b.forward(ctx, w, req, key, bind, c, ks)
	default:
		b.failed(ctx, w, req, key, bind, c, ks, err)
	}
}

// failed answers a request whose cache.Get returned err.
func (b *Broker) failed(ctx context.Context, w http.ResponseWriter, req *request, key cache.Key, bind string, c *client, ks *keyState, err error) {
	now := b.tokens.Now()
	var lim *LimitError
	var ex *budget.ExceededError
	switch {
	case errors.As(err, &lim):
		c.limited.Add(1)
		b.results.WithLabelValues(req.up.Name, "limited").Inc()
		writeError(w, http.StatusTooManyRequests, "temporarily_unavailable", "mint limit reached for this client", lim.RetryAfter)
		return
	case errors.As(err, &ex):
		c.limited.Add(1)
		b.results.WithLabelValues(req.up.Name, "limited").Inc()
		writeError(w, http.StatusTooManyRequests, "temporarily_unavailable", "mint budget used up for this client", ex.RetryAt.Sub(now))
		return
	}
	b.mu.Lock()
	failed, rj := ks.failed, ks.reject
	b.mu.Unlock()
	if failed != "" && !same(failed, bind) {
		// Someone else's secret failed (or put the key in back-off): this
		// request's own secret deserves its own answer from the IdP.
		b.forward(ctx, w, req, key, bind, c, ks)
		return
	}
	if rj != nil {
		b.reject(w, c, rj, now)
		return
	}
	var ue *cache.UnavailableError
	retry := time.Duration(0)
	if errors.As(err, &ue) && !ue.RetryAt.IsZero() {
		retry = ue.RetryAt.Sub(now)
	}
	b.results.WithLabelValues(req.up.Name, "rejected").Inc()
	b.log.Warn("broker: no token", zap.String("upstream", req.up.Name), zap.String("client_id", req.clientID), zap.Error(err))
	writeError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "the identity provider did not issue a token", retry)
}

func (b *Broker) reject(w http.ResponseWriter, c *client, rj *rejection, now time.Time) {
	c.rejected.Add(1)
	b.results.WithLabelValues(c.up.Name, "rejected").Inc()
	retry := rj.retryAfter
	writeError(w, rj.status, rj.code, rj.desc, retry)
}

// forward asks the IdP directly, outside the cache, with this request's
// secret. Identical concurrent forwards share one IdP request. A token
// obtained this way is returned but not cached.
func (b *Broker) forward(ctx context.Context, w http.ResponseWriter, req *request, key cache.Key, bind string, c *client, ks *keyState) {
	src := b.source(req, bind, ks)
	ch := b.direct.DoChan(key.ID+"/"+bind, func() (any, error) {
		// A flight for this secret may have just finished and cached its token.
		if tok, ok := b.tokens.Peek(key); ok && same(tok.Binding, bind) {
			return tok, nil
		}
		// Check the limits but charge only a token actually issued: a
		// stranger's wrong secrets must not use up the client's mints.
		if err := b.check(c); err != nil {
			return nil, err
		}
		fctx := context.WithoutCancel(ctx) // shared by every caller in the flight
		tok, err := src.Token(fctx)
		if err != nil {
			return nil, err
		}
		b.charge(c)
		if _, ok := b.tokens.Peek(key); !ok {
			// Nothing cached: this token is what the next requests get.
			ks.seeds.Add(1)
			_, _ = b.tokens.Get(fctx, key, seedSource(tok))
			ks.seeds.Add(-1)
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
	if res.Err != nil {
		var idp *credential.IdPError
		if errors.As(res.Err, &idp) && !idp.Temporary() {
			b.reject(w, c, rejectionFrom(idp, b.cfg.NegativeTTL.D(), b.tokens.Now()), b.tokens.Now())
			return
		}
		b.failed(ctx, w, req, key, bind, c, &keyState{client: c}, res.Err)
		return
	}
	tok := res.Val.(credential.Token)
	c.forwarded.Add(1)
	b.served(w, c, tok, req, "forwarded")
}

// seedSource hands the cache a token minted outside it.
type seedSource credential.Token

func (s seedSource) Token(context.Context) (credential.Token, error) { return credential.Token(s), nil }

// served writes the RFC 6749 §5.1 answer for tok.
func (b *Broker) served(w http.ResponseWriter, c *client, tok credential.Token, req *request, result string) {
	if result == "cached" {
		c.cached.Add(1)
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

// state finds or creates the bookkeeping for key and its client.
func (b *Broker) state(key cache.Key, req *request) (*keyState, *client, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ks, ok := b.keys[key.ID]; ok {
		return ks, ks.client, nil
	}
	if len(b.keys) >= maxKeys {
		return nil, nil, errors.New("too many distinct token requests")
	}
	cid := req.up.Name + "\x00" + req.clientID
	c, ok := b.clients[cid]
	if !ok {
		if len(b.clients) >= maxClients {
			return nil, nil, errors.New("too many clients")
		}
		c = newClient(req.clientID, req.up, b.tokens.Now())
		b.clients[cid] = c
		if b.meter != nil {
			b.meter.Set(c.meterName(), budget.Policy{
				Limit: req.up.Budget.Mints, Window: req.up.Budget.Per.D(), Enforce: req.up.Budget.Enforce,
				CostPerMint: req.up.CostPerMint, Label: NamePrefix + req.up.Name,
			})
		}
	}
	ks := &keyState{key: key.ID, client: c, params: req.params.Encode()}
	b.keys[key.ID] = ks
	c.keys = append(c.keys, key)
	return ks, c, nil
}

func (b *Broker) negativeFor(keyID, bind string, now time.Time) *rejection {
	b.mu.Lock()
	defer b.mu.Unlock()
	rj, ok := b.negative[keyID+"/"+bind]
	if !ok {
		return nil
	}
	if !now.Before(rj.until) {
		delete(b.negative, keyID+"/"+bind)
		return nil
	}
	return rj
}

// rememberLocked negative-caches rj for this key and secret; b.mu is held.
func (b *Broker) rememberLocked(keyID, bind string, rj *rejection, now time.Time) {
	if len(b.negative) >= maxNegative {
		for k, v := range b.negative {
			if !now.Before(v.until) {
				delete(b.negative, k)
			}
		}
		if len(b.negative) >= maxNegative {
			return
		}
	}
	b.negative[keyID+"/"+bind] = rj
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

func printable(s string) string {
	if len(s) > 40 {
		s = s[:40]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, s)
}
