package cache

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/credential"
)

// Fleet-wide minting through the shared tier (Options.L2).
//
// On a miss, or when a token reaches its refresh point, a replica first looks
// in L2. Finding nothing good enough, it takes the fleet mint lock and mints;
// a replica that loses the lock polls L2 for the winner's token and, at every
// poll, contends for the lock again. A holder that dies mid-mint leaves its
// lock until the lock's TTL, which is the same for every waiter: the first
// waiter to poll after it expires takes the lock and mints, the others get
// its token. So a dead holder costs one more mint, not one per waiter. Any L2
// error means "no fleet": mint locally at once, so Redis trouble never fails
// a Check.

const (
	firstPoll = 5 * time.Millisecond
	maxPoll   = 250 * time.Millisecond

	// lockPatience is how many lock lifetimes (LockWait) a waiter polls
	// before it mints without the lock. Normally one lifetime ends in a
	// token or a lock taken over; more only pass when locks keep being
	// taken and never delivered (holders crashing one after another) or a
	// lock does not expire (another replica with a far longer lock_ttl, a
	// key written by hand). The bound keeps those from stopping this
	// replica from ever minting the credential.
	lockPatience = 3
)

// obtainShared gets s a new token through L2. refresh says the slot still
// holds a valid token that has reached its refresh point: then only a token
// that has not reached its own refresh point will do.
// ctx has the cache's lifetime and the asking Check's trace (see detach).
func (t *Tokens) obtainShared(ctx context.Context, s *slot, src credential.Source, refresh bool) (any, error) {
	l2, name, key := t.opts.L2, s.name, s.key()
	deadline := time.Now().Add(lockPatience * l2.LockWait())
	delay := firstPoll
	contended := false
	for {
		tok, ok, err := l2.Load(ctx, key)
		if err != nil {
			return t.mintShared(ctx, s, src, false)
		}
		if e := t.acceptable(s, tok, ok, refresh); e != nil {
			if contended {
				t.opts.L2Meter.lock(name, "waited")
			}
			return e, nil
		}
		release, held, err := l2.Lock(ctx, key)
		if err != nil {
			return t.mintShared(ctx, s, src, false)
		}
		if held {
			defer release()
			// Another replica may have stored its token between our Load and
			// our Lock (and released the lock): look once more.
			if tok, ok, err := l2.Load(ctx, key); err == nil {
				if e := t.acceptable(s, tok, ok, refresh); e != nil {
					return e, nil
				}
			}
			return t.mintShared(ctx, s, src, true)
		}
		contended = true
		if !time.Now().Before(deadline) {
			t.opts.L2Meter.lock(name, "timed_out")
			t.opts.Logger.Warn("the fleet mint lock stayed taken without a token; minting here",
				zap.String("credential", name), zap.Duration("waited", lockPatience*l2.LockWait()))
			return t.mintShared(ctx, s, src, true)
		}
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return nil, &UnavailableError{Name: name, Err: ctx.Err()}
		}
		delay = min(delay*2, maxPoll)
	}
}

// acceptable adopts tok from L2 into s when it is good enough: usable now,
// and for a refresh not yet due for refresh itself. It returns nil otherwise.
func (t *Tokens) acceptable(s *slot, tok credential.Token, ok, refresh bool) *credential.Token {
	if !ok {
		return nil
	}
	now := t.opts.Now()
	set := t.level()
	e := t.hold(tok, now)
	if !now.Before(set.until(e)) || refresh && !now.Before(set.refreshAt(e)) {
		return nil
	}
	s.mu.Lock()
	if s.rejects(&tok) { // invalidated here: never adopt it again
		s.mu.Unlock()
		return nil
	}
	if cur := t.slots.load(s); cur != nil && cur.Expiry.After(tok.Expiry) {
		e = cur // ours is newer (a refresh raced ahead): keep it
	} else {
		t.slots.succeeded(s, e)
	}
	s.mu.Unlock()
	t.memo.changed()
	t.opts.Logger.Debug("token from shared cache", zap.String("credential", s.name))
	return e
}

// mintShared mints and shares the token with the fleet for the rest of its
// usable life. share false means the tier just failed: the token is queued
// to be offered once the tier answers again (offer.go).
func (t *Tokens) mintShared(ctx context.Context, s *slot, src credential.Source, share bool) (any, error) {
	v, err := t.mint(ctx, s, src)
	if err != nil {
		return v, err
	}
	e := v.(*credential.Token)
	if !share {
		t.pendOffer(s, e)
		return v, nil
	}
	if err := t.opts.L2.Store(ctx, s.key(), *e, t.level().until(e).Sub(t.opts.Now())); err != nil {
		t.opts.Logger.Debug("token not shared; offered again later", zap.String("credential", s.name), zap.Error(err))
		t.pendOffer(s, e)
	}
	return v, nil
}
