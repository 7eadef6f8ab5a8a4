// Package cache keeps tokens until shortly before they expire and mints each
// one exactly once per lifetime.
//
// It knows tokens and time, not OAuth: a credential.Source does the minting.
// Each key has one cell in one table (table.go), holding the current token
// and the hit counter, and one slot (slots.go), holding what a miss or a
// refresh needs to remember (back-off after failures, a refresh in flight).
// A hit is one probe of the table, an atomic load and a clock compare, at
// any number of keys, and reads the cell and the token only. cache.max_tokens bounds
// the slots; eviction takes idle keys only, never one with a mint in flight
// or leased by push mode, so a token is still minted once per lifetime.
package cache

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/tokenbroker/tokenbroker/credential"
	"github.com/tokenbroker/tokenbroker/internal/logthrottle"
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

	hash uint64 // hashID(ID) when set by Hashed; 0 means not known
}

// Hashed returns k carrying its ID's hash, so that a lookup does not read the
// ID's bytes to hash them (spread over 100k keys, that read is a CPU cache
// miss of its own). For keys built once and looked up often, such as the
// filter's; set ID before calling it, and do not change it after.
func (k Key) Hashed() Key {
	k.hash = hashID(k.ID)
	return k
}

func (k Key) hashOf() uint64 {
	if k.hash != 0 {
		return k.hash
	}
	return hashID(k.ID)
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

// mintFailLogEvery is how often failed mints may log a line (failed_mints
// counts the ones in between). A single failing credential retries no
// sooner than MinBackoff (1 s by default), so it still logs every attempt.
const mintFailLogEvery = time.Second

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
	opts     Options
	settings atomic.Pointer[Settings] // Reconfigure replaces it; deadlines are computed from it at every lookup
	slots    table
	group    singleflight.Group

	ctx    context.Context // cancelled by Close; parent of background refreshes
	cancel context.CancelFunc
	bg     sync.WaitGroup
	mints  mintCounts // for the status chart (observe.go)

	memo    labelMemo            // per-label lookups and soonest expiry for scrapes (summary.go)
	failLog logthrottle.Throttle // "mint failed" lines, one per mintFailLogEvery

	offerMu  sync.Mutex         // guards offers and offering
	offers   map[string]offered // by Key.ID: minted while L2 was away, to be offered (offer.go)
	offering bool               // the offer loop runs
	offerWG  sync.WaitGroup
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
	ctx, cancel := context.WithCancel(context.Background())
	t := &Tokens{opts: opts, ctx: ctx, cancel: cancel, offers: make(map[string]offered)}
	t.settings.Store(&set)
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
}

// Settle waits until no background refresh is running. Tests use it instead
// of sleeping.
func (t *Tokens) Settle() { t.bg.Wait() }

// Get returns a valid token for key, minting it from src only when no usable
// token is cached. Concurrent callers for one key share a single mint. When
// the token nears its end, Get keeps returning it and refreshes it in the
// background. Get never returns a token within ExpiryMargin of its expiry.
func (t *Tokens) Get(ctx context.Context, key Key, src credential.Source) (credential.Token, error) {
	tok, err := t.Held(ctx, key, src)
	if err != nil {
		return credential.Token{}, err
	}
	return *tok, nil
}

// Held is Get handing out the held token itself rather than a copy, which
// the caller must not modify: a hit then reads the table's cell and nothing
// else, and the caller reads only what it uses of the token (the filter, the
// header it writes).
func (t *Tokens) Held(ctx context.Context, key Key, src credential.Source) (*credential.Token, error) {
	now := t.opts.Now()
	set := t.level()
	if tok, due := t.slots.hit(key.hashOf(), key.ID, now, set); tok != nil {
		t.memo.looked()
		outcome := telemetry.CacheHit
		if due {
			// Due: only now is the slot needed (a hit does not read it).
			if s := t.slots.get(key.ID); s != nil && t.refreshInBackground(ctx, s, src, now) {
				outcome = telemetry.CacheRefresh
			}
		}
		telemetry.NoteCache(ctx, outcome)
		return tok, nil
	}
	s := t.pin(key)
	defer s.unpin()
	s.misses.Add(1)
	t.memo.changed()
	telemetry.NoteCache(ctx, telemetry.CacheMiss)
	mctx := t.detach(ctx) // observe.go: the cache's lifetime, the caller's trace
	ch := t.group.DoChan(key.ID, func() (any, error) {
		return t.flight(key, func(s *slot) (any, error) { return t.fill(mctx, s, src) })
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		tok := r.Val.(*credential.Token)
		if !now.Before(t.level().refreshAt(tok)) {
			// Held already due (new settings, a race with a refresh).
			t.refreshInBackground(ctx, s, src, now)
		}
		return tok, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("credential %q: waiting for token: %w", key.Name, ctx.Err())
	}
}

// Invalidate forgets key's token so the next Get mints a new one. With a
// shared tier, the tier's copy of that very token goes too (a token another
// replica has stored since stays), and this replica will not adopt that
// token from the tier again, should another replica's offer write it back:
// otherwise the next lookup here would read the dropped token straight
// back. Other replicas keep their own copies until they are invalidated or
// refresh.
func (t *Tokens) Invalidate(key Key) { t.invalidate(key, false) }

// InvalidateLocal forgets this replica's token for key and nothing else:
// the next lookup takes the fleet's from the shared tier when it has one
// (the token just dropped included), or mints.
func (t *Tokens) InvalidateLocal(key Key) { t.invalidate(key, true) }

func (t *Tokens) invalidate(key Key, local bool) {
	s := t.slots.get(key.ID)
	if s == nil {
		return
	}
	s.mu.Lock()
	old := t.slots.load(s)
	t.slots.store(s, nil)
	shared := old != nil && t.shared(s) && !local
	var fp uint64
	if shared {
		if s.trouble == nil {
			s.trouble = &trouble{}
		}
		fp = fingerprint(old)
		s.trouble.rejected = fp
	}
	s.mu.Unlock()
	t.memo.changed()
	if !shared {
		return
	}
	if _, err := t.opts.L2.Drop(t.ctx, s.key(), func(x credential.Token) bool { return fingerprint(&x) == fp }); err != nil {
		// Not dropped: this replica still will not adopt it (rejected), and
		// its next mint overwrites it.
		t.opts.Logger.Warn("invalidated token not dropped from the shared cache",
			zap.String("credential", s.name), zap.Error(err))
	}
}

// Forget drops key entirely: its token and its bookkeeping (a removed credential).
func (t *Tokens) Forget(key Key) {
	if s, hits := t.slots.remove(key.ID); s != nil {
		t.retire(s, hits)
	}
}

// retire keeps the lookups of s, leaving the table with hits counted in its
// cell, in its label's totals; the scrape memo must be rebuilt, or s would
// count twice.
func (t *Tokens) retire(s *slot, hits uint64) {
	t.opts.Meter.retire(s, hits)
	t.memo.changed()
}

// pin returns key's slot pinned (see slot.pins), making it if needed and
// then evicting down to MaxTokens. The caller unpins it.
func (t *Tokens) pin(key Key) *slot {
	s, inserted := t.slots.pin(key, t.opts.Meter.newSlot)
	if inserted {
		t.bound(key.ID)
	}
	return s
}

// bound evicts idle keys until MaxTokens remain.
func (t *Tokens) bound(id string) {
	set := t.level()
	now := t.opts.Now()
	t.slots.bound(set.MaxTokens, id,
		func(tok *credential.Token) bool { return now.Before(set.until(tok)) },
		t.retire)
}

// flight runs f, the body of a single-flight for key, on key's slot pinned
// for its whole run: the flight outlives the callers that wait on it, and
// its slot must not be evicted under it, or the token it mints would land
// in a slot nobody finds and the next lookup would mint again.
func (t *Tokens) flight(key Key, f func(*slot) (any, error)) (any, error) {
	s := t.pin(key)
	defer s.unpin()
	return f(s)
}

// fill runs once per key at a time (single-flight): it returns the slot's
// token when one is usable (a lookup that raced a mint), or mints a new one.
func (t *Tokens) fill(ctx context.Context, s *slot, src credential.Source) (any, error) {
	if tok := t.slots.load(s); tok != nil && t.opts.Now().Before(t.level().until(tok)) {
		return tok, nil
	}
	if t.shared(s) {
		return t.obtainShared(ctx, s, src, false)
	}
	return t.mint(ctx, s, src)
}

// shared reports whether s's token goes through the fleet's shared tier.
func (t *Tokens) shared(s *slot) bool { return t.opts.L2 != nil && !s.local }

// refreshInBackground starts one refresh for s unless one is running or the
// last failure asked us to wait, and reports whether it did.
func (t *Tokens) refreshInBackground(ctx context.Context, s *slot, src credential.Source, now time.Time) bool {
	if !s.startRefresh() {
		return false
	}
	s.mu.Lock()
	waiting := now.Before(s.backoffUntil())
	s.mu.Unlock()
	// An evicted slot (tryPin fails) is not refreshed: its token is still
	// valid for this lookup, and the next one mints into a new slot.
	if waiting || t.ctx.Err() != nil || !s.tryPin() {
		s.endRefresh()
		return false
	}
	trigger := triggeredBy(ctx) // observe.go
	t.bg.Add(1)
	go func() {
		defer t.bg.Done()
		defer s.unpin()
		defer s.endRefresh()
		ctx, end := t.refreshTrace(s, trigger) // its own trace, linked to the Check
		defer end()
		// Joining the single-flight means a concurrent foreground miss and this
		// refresh share one mint.
		_, _, _ = t.group.Do(s.id, func() (any, error) {
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
	attempt := 1
	if tr := s.trouble; tr != nil {
		attempt = tr.failures + 1
		if now.Before(tr.nextAttempt) {
			err := &UnavailableError{Name: s.name, RetryAt: tr.nextAttempt, Err: fmt.Errorf("%w: %v", ErrBackoff, tr.lastErr)}
			s.mu.Unlock()
			t.opts.Meter.mintSkipped(s.name)
			return nil, err
		}
	}
	s.mu.Unlock()
	if t.opts.MayMint != nil {
		if err := t.opts.MayMint(s.key()); err != nil {
			t.opts.Meter.mintSkipped(s.name)
			return nil, &UnavailableError{Name: s.name, Err: err}
		}
	}

	// Detached from any one caller: the mint is shared by every waiter, so one
	// impatient caller must not cancel it for the rest. The source bounds it.
	ctx, span := t.startMint(ctx, s.name, attempt) // observe.go
	start := time.Now()
	tok, err := src.Token(ctx)
	latency := time.Since(start)
	now = t.opts.Now()
	if err == nil {
		err = t.usable(tok, now)
	}
	t.opts.Meter.minted(s.name, err, latency)
	t.mints.count(err)

	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		tr := s.trouble
		if tr == nil {
			tr = &trouble{}
			s.trouble = tr
		}
		tr.failures++
		tr.lastErr = err
		tr.lastFailure = failure{err.Error(), now}
		tr.nextAttempt = now.Add(t.backoff(tr.failures, err))
		endMint(span, err, latency, tr.nextAttempt.Sub(now))
		// An IdP outage fails every key at once (100k broker clients, each
		// on its own back-off): one line per interval, naming the latest
		// failure and counting the rest; the status page and the mint
		// metrics keep every key's.
		if n, ok := t.failLog.Take(now, mintFailLogEvery); ok {
			t.opts.Logger.Warn("mint failed",
				zap.String("credential", s.name),
				zap.Error(err),
				zap.Int("consecutive_failures", tr.failures),
				zap.Time("next_attempt", tr.nextAttempt),
				zap.Int64("failed_mints", n))
		}
		// A still-valid older token keeps being served by the hit path.
		return nil, &UnavailableError{Name: s.name, RetryAt: tr.nextAttempt, Err: err}
	}
	endMint(span, nil, latency, 0)
	held := t.hold(tok, now)
	t.slots.succeeded(s, held)
	t.memo.changed()
	s.lastMint, s.latency = now.UnixNano(), uint32(min(latency/time.Microsecond, math.MaxUint32))
	t.opts.Logger.Info("minted token",
		zap.String("credential", s.name),
		zap.Duration("lifetime", tok.Lifetime()),
		zap.Duration("latency", latency))
	return held, nil
}

// usable rejects a token that could never be handed out under the margin,
// which would otherwise make every request mint again.
func (t *Tokens) usable(tok credential.Token, now time.Time) error {
	if margin := t.level().ExpiryMargin; !tok.Expiry.Add(-margin).After(now) {
		return fmt.Errorf("token lifetime %s does not exceed expiry_margin %s", tok.Expiry.Sub(now).Round(time.Millisecond), margin)
	}
	return nil
}

// hold is the copy of tok a slot keeps. Its refresh point is measured from
// Issued, so a token that does not say when it was issued (or says a time
// past its usable end) counts as issued now.
func (t *Tokens) hold(tok credential.Token, now time.Time) *credential.Token {
	h := new(credential.Token)
	*h = tok
	if h.Issued.IsZero() || h.Issued.After(t.level().until(h)) {
		h.Issued = now
	}
	return h
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
