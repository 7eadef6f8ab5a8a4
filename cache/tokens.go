// Package cache keeps tokens until shortly before they expire and mints each
// one exactly once per lifetime.
//
// It knows tokens and time, not OAuth: a credential.Source does the minting.
// The hit path is a ristretto lookup and a clock read. Everything a miss or a
// refresh needs to remember (the last good token, back-off after failures, a
// refresh in flight) lives in a per-key slot outside ristretto, because
// ristretto may drop a Set and a dropped Set must never cause a re-mint.
package cache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/tokenbroker/tokenbroker/credential"
	"github.com/tokenbroker/tokenbroker/telemetry"
)

// Key names a cached token: ID is the credential's identity hash (never a
// secret) and Name is the human name used in logs and metric labels.
type Key struct {
	ID   string
	Name string
	// Local keeps the token out of the shared tier (L2): for a source that
	// costs nothing to ask, such as a static value, a copy in Redis would
	// only widen who can read it, and would be found by any replica whose
	// identity for it collides.
	Local bool
}

// Options configure a Tokens cache. Zero values take the documented defaults.
type Options struct {
	MaxTokens    int64         // default 100000
	ExpiryMargin time.Duration // a token is never returned within this of its expiry
	RefreshAhead float64       // refresh when less than this fraction of the usable lifetime is left (default 0.2)
	MinBackoff   time.Duration // first retry delay after a failed mint (default 1s)
	MaxBackoff   time.Duration // longest retry delay (default 1m)

	Now    func() time.Time // clock seam; default time.Now
	Logger *zap.Logger      // default zap.NewNop()
	Meter  *Metrics         // default: unregistered metrics

	// L2 is a tier shared by a fleet (Redis); nil keeps tokens in this
	// process only. It is consulted on misses and refreshes, never on hits.
	L2      Shared
	L2Meter *L2Metrics // default: unregistered metrics
	// MayMint, when set, is asked before every request to the IdP; an error
	// refuses the mint (budgets, rate limits) without counting as an IdP
	// failure: a still-valid token keeps being served and the caller gets an
	// *UnavailableError wrapping the refusal.
	MayMint func(Key) error
	// OfferEvery is how often a token minted while L2 was unreachable is
	// offered to it again (default 1s).
	OfferEvery time.Duration
}

// ErrBackoff marks a request refused without calling the IdP because the
// previous mint failed and its retry time has not come yet.
var ErrBackoff = errors.New("waiting to retry after a failed mint")

// UnavailableError says why no valid token could be returned.
type UnavailableError struct {
	Name    string
	RetryAt time.Time // the earliest instant the IdP will be asked again
	Err     error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("credential %q: no valid token: %v", e.Name, e.Err)
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// Tokens is the in-process token cache (L1). It is safe for concurrent use.
type Tokens struct {
	opts  Options
	l1mu  sync.RWMutex // guards l1: Reconfigure replaces it, and closes the ristretto it held
	l1    *level1
	group singleflight.Group
	slots sync.Map // Key.ID -> *slot

	ctx    context.Context // cancelled by Close; parent of background refreshes
	cancel context.CancelFunc
	bg     sync.WaitGroup
	mints  mintCounts // for the status chart (observe.go)

	expiries expiryMemo // per-label soonest expiry for scrapes (summary.go)

	offerMu  sync.Mutex        // guards offers and offering
	offers   map[string]*entry // by Key.ID: minted while L2 was away, to be offered (offer.go)
	offering bool              // the offer loop runs
	offerWG  sync.WaitGroup
}

// entry is what ristretto holds: an immutable token with its deadlines.
type entry struct {
	tok       credential.Token
	refreshAt time.Time // start a background refresh from here
	until     time.Time // last instant the token may be handed out (expiry − margin)
	slot      *slot
	l1        *level1 // whose settings gave refreshAt and until
}

// slot is the per-key bookkeeping kept outside ristretto.
type slot struct {
	key        Key
	refreshing atomic.Bool
	hits       counter
	misses     counter

	mu          sync.Mutex // guards the fields below
	cur         *entry     // last good token, survives a dropped or evicted ristretto Set
	failures    int        // consecutive failed mints
	nextAttempt time.Time  // no mint before this instant
	lastErr     error
	lastMint    time.Time
	lastLatency time.Duration
	lastFailure failure // the latest failed mint, kept after a success (status page)
}

// New builds a cache. Call Close to stop background refreshes.
func New(opts Options) (*Tokens, error) {
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = time.Second
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(time.Minute, opts.MinBackoff)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Meter == nil {
		opts.Meter = NewMetrics(nil)
	}
	if opts.L2Meter == nil {
		opts.L2Meter = NewL2Metrics(nil)
	}
	if opts.OfferEvery <= 0 {
		opts.OfferEvery = defaultOfferEvery
	}
	set := Settings{MaxTokens: opts.MaxTokens, ExpiryMargin: opts.ExpiryMargin, RefreshAhead: opts.RefreshAhead}.withDefaults()
	store, err := newStore(set.MaxTokens)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &Tokens{opts: opts, l1: &level1{Settings: set, store: store}, ctx: ctx, cancel: cancel, offers: make(map[string]*entry)}
	opts.Meter.watch(t)
	return t, nil
}

// Close stops background refreshes, waits for them, and releases the cache.
func (t *Tokens) Close() {
	t.cancel()
	t.bg.Wait()
	t.offerMu.Lock() // no offer loop starts after this
	t.offerMu.Unlock()
	t.offerWG.Wait()
	t.opts.Meter.unwatch(t)
	t.l1mu.Lock()
	defer t.l1mu.Unlock()
	t.l1.store.Close()
}

// Settle waits until no background refresh is running and every pending
// ristretto write is applied. Tests use it instead of sleeping.
func (t *Tokens) Settle() {
	t.bg.Wait()
	t.l1mu.RLock()
	defer t.l1mu.RUnlock()
	t.l1.store.Wait()
}

// Get returns a valid token for key, minting it from src only when no usable
// token is cached. Concurrent callers for one key share a single mint. When
// the token nears its end, Get keeps returning it and refreshes it in the
// background. Get never returns a token within ExpiryMargin of its expiry.
func (t *Tokens) Get(ctx context.Context, key Key, src credential.Source) (credential.Token, error) {
	now := t.opts.Now()
	if e, ok := t.lookup(key.ID); ok && now.Before(e.until) {
		e.slot.hits.inc()
		outcome := telemetry.CacheHit
		if !now.Before(e.refreshAt) && t.refreshInBackground(ctx, e.slot, src, now) {
			outcome = telemetry.CacheRefresh
		}
		telemetry.NoteCache(ctx, outcome)
		return e.tok, nil
	}
	s := t.slot(key)
	s.misses.inc()
	telemetry.NoteCache(ctx, telemetry.CacheMiss)
	mctx := t.detach(ctx) // observe.go: the cache's lifetime, the caller's trace
	ch := t.group.DoChan(key.ID, func() (any, error) { return t.fill(mctx, s, src) })
	select {
	case r := <-ch:
		if r.Err != nil {
			return credential.Token{}, r.Err
		}
		e := r.Val.(*entry)
		if !now.Before(e.refreshAt) {
			// Restored from its slot (a dropped Set, new settings) already due.
			t.refreshInBackground(ctx, e.slot, src, now)
		}
		return e.tok, nil
	case <-ctx.Done():
		return credential.Token{}, fmt.Errorf("credential %q: waiting for token: %w", key.Name, ctx.Err())
	}
}

// Invalidate forgets key's token so the next Get mints a new one.
func (t *Tokens) Invalidate(key Key) {
	t.drop(key.ID)
	if v, ok := t.slots.Load(key.ID); ok {
		s := v.(*slot)
		s.mu.Lock()
		s.cur = nil
		s.mu.Unlock()
		t.tokenChanged()
	}
}

// Forget drops key entirely: its token and its bookkeeping (a removed credential).
func (t *Tokens) Forget(key Key) {
	t.drop(key.ID)
	t.slots.Delete(key.ID)
	t.tokenChanged()
}

func (t *Tokens) slot(key Key) *slot {
	if v, ok := t.slots.Load(key.ID); ok {
		return v.(*slot)
	}
	v, _ := t.slots.LoadOrStore(key.ID, t.opts.Meter.newSlot(key))
	return v.(*slot)
}

// fill runs once per key at a time (single-flight): it restores the slot's
// token when ristretto lost it, or mints a new one.
func (t *Tokens) fill(ctx context.Context, s *slot, src credential.Source) (any, error) {
	now := t.opts.Now()
	cur := t.renew(s)
	if cur != nil && now.Before(cur.until) {
		t.store(cur, now)
		return cur, nil
	}
	if t.shared(s) {
		return t.obtainShared(ctx, s, src, false)
	}
	return t.mint(ctx, s, src)
}

// shared reports whether s's token goes through the fleet's shared tier.
func (t *Tokens) shared(s *slot) bool { return t.opts.L2 != nil && !s.key.Local }

// refreshInBackground starts one refresh for s unless one is running or the
// last failure asked us to wait, and reports whether it did.
func (t *Tokens) refreshInBackground(ctx context.Context, s *slot, src credential.Source, now time.Time) bool {
	if !s.refreshing.CompareAndSwap(false, true) {
		return false
	}
	s.mu.Lock()
	waiting := now.Before(s.nextAttempt)
	s.mu.Unlock()
	if waiting || t.ctx.Err() != nil {
		s.refreshing.Store(false)
		return false
	}
	trigger := triggeredBy(ctx) // observe.go
	t.bg.Add(1)
	go func() {
		defer t.bg.Done()
		defer s.refreshing.Store(false)
		ctx, end := t.refreshTrace(s, trigger) // its own trace, linked to the Check
		defer end()
		// Joining the single-flight means a concurrent foreground miss and this
		// refresh share one mint.
		_, _, _ = t.group.Do(s.key.ID, func() (any, error) {
			if t.shared(s) {
				return t.obtainShared(ctx, s, src, true)
			}
			return t.mint(ctx, s, src)
		})
	}()
	return true
}

// mint asks the IdP for a token, honouring back-off after failures. ctx
// carries the trace of the Check or refresh that asked; it is detached from
// any one caller's cancellation (see detach).
func (t *Tokens) mint(ctx context.Context, s *slot, src credential.Source) (any, error) {
	now := t.opts.Now()
	s.mu.Lock()
	attempt := s.failures + 1
	if now.Before(s.nextAttempt) {
		err := &UnavailableError{Name: s.key.Name, RetryAt: s.nextAttempt, Err: fmt.Errorf("%w: %v", ErrBackoff, s.lastErr)}
		s.mu.Unlock()
		t.opts.Meter.mintSkipped(s.key.Name)
		return nil, err
	}
	s.mu.Unlock()
	if t.opts.MayMint != nil {
		if err := t.opts.MayMint(s.key); err != nil {
			t.opts.Meter.mintSkipped(s.key.Name)
			return nil, &UnavailableError{Name: s.key.Name, Err: err}
		}
	}

	// Detached from any one caller: the mint is shared by every waiter, so one
	// impatient caller must not cancel it for the rest. The source bounds it.
	ctx, span := t.startMint(ctx, s.key.Name, attempt) // observe.go
	start := time.Now()
	tok, err := src.Token(ctx)
	latency := time.Since(start)
	now = t.opts.Now()
	if err == nil {
		err = t.usable(tok, now)
	}
	t.opts.Meter.minted(s.key.Name, err, latency)
	t.mints.count(err)

	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.failures++
		s.lastErr = err
		s.lastFailure = failure{err.Error(), now}
		s.nextAttempt = now.Add(t.backoff(s.failures, err))
		endMint(span, err, latency, s.nextAttempt.Sub(now))
		t.opts.Logger.Warn("mint failed",
			zap.String("credential", s.key.Name),
			zap.Error(err),
			zap.Int("consecutive_failures", s.failures),
			zap.Time("next_attempt", s.nextAttempt))
		// A still-valid older token keeps being served by the hit path.
		return nil, &UnavailableError{Name: s.key.Name, RetryAt: s.nextAttempt, Err: err}
	}
	endMint(span, nil, latency, 0)
	e := t.newEntry(s, tok)
	s.cur, s.failures, s.lastErr, s.nextAttempt = e, 0, nil, time.Time{}
	s.lastMint, s.lastLatency = now, latency
	t.store(e, now)
	t.opts.Logger.Info("minted token",
		zap.String("credential", s.key.Name),
		zap.Duration("lifetime", tok.Lifetime()),
		zap.Duration("latency", latency))
	return e, nil
}

// usable rejects a token that could never be handed out under the margin,
// which would otherwise make every request mint again.
func (t *Tokens) usable(tok credential.Token, now time.Time) error {
	if margin := t.level().ExpiryMargin; !tok.Expiry.Add(-margin).After(now) {
		return fmt.Errorf("token lifetime %s does not exceed expiry_margin %s", tok.Expiry.Sub(now).Round(time.Millisecond), margin)
	}
	return nil
}

func (t *Tokens) newEntry(s *slot, tok credential.Token) *entry {
	l1 := t.level()
	until := tok.Expiry.Add(-l1.ExpiryMargin)
	start := tok.Issued
	if start.IsZero() || start.After(until) {
		start = t.opts.Now()
	}
	window := until.Sub(start)
	refreshAt := start.Add(window - time.Duration(float64(window)*l1.RefreshAhead))
	return &entry{tok: tok, refreshAt: refreshAt, until: until, slot: s, l1: l1}
}

// store puts e in ristretto with a TTL ending at its usable deadline. A
// dropped Set is harmless: the slot still holds e. So is an e made under
// settings Reconfigure has since replaced, which is not stored at all.
func (t *Tokens) store(e *entry, now time.Time) {
	t.tokenChanged() // every caller has just set (or kept) the slot's token
	if ttl := e.until.Sub(now); ttl > 0 {
		t.l1mu.RLock()
		defer t.l1mu.RUnlock()
		if e.l1 == t.l1 {
			t.l1.store.SetWithTTL(e.slot.key.ID, e, 1, ttl)
		}
	}
}

// backoff is a jittered exponential delay, or the IdP's Retry-After when longer.
func (t *Tokens) backoff(failures int, err error) time.Duration {
	d := t.opts.MinBackoff << min(failures-1, 20)
	if d <= 0 || d > t.opts.MaxBackoff {
		d = t.opts.MaxBackoff
	}
	d = d/2 + rand.N(d/2+1) // jitter so a fleet does not retry in step
	var idp *credential.IdPError
	if errors.As(err, &idp) && idp.RetryAfter > d {
		// Honour Retry-After, within reason: an IdP asking for a day still
		// gets asked again within an hour.
		d = min(idp.RetryAfter, time.Hour)
	}
	return d
}
