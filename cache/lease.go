package cache

import (
	"context"
	"fmt"
	"time"

	"github.com/tokenbroker/tokenbroker/credential"
)

// Push mode (package sds) keeps tokens fresh with no request to trigger a
// refresh: it asks for a Lease — a token with the two instants that matter
// for it — and sets timers on them.

// Lease is a token and the instants this cache schedules it by.
type Lease struct {
	Token     credential.Token
	RefreshAt time.Time // from here a replacement is due
	Until     time.Time // the token's usable end (expiry − ExpiryMargin): it must not be used after this
}

// Lease returns a usable token for key with its deadlines, obtaining one as
// a cold Get does (one mint shared by concurrent callers, through the fleet
// tier when configured) when none is held. With fresh set, a held token that
// has reached its refresh point is replaced first, the way a background
// refresh replaces it; a token another refresh already replaced is taken
// as it is, without a second mint. Lease counts no lookup and starts no
// background work. On failure it returns an *UnavailableError, whose RetryAt
// (when set) says when asking again can help.
func (t *Tokens) Lease(ctx context.Context, key Key, src credential.Source, fresh bool) (Lease, error) {
	s := t.slot(key)
	mctx := t.detach(ctx) // the cache's lifetime, the caller's trace
	var last *entry
	// Two rounds: a fresh Lease that joined a flight which only restored the
	// old token (a concurrent cold Get) goes once more.
	for range 2 {
		if e := t.held(s, fresh); e != nil {
			return e.lease(), nil
		}
		ch := t.group.DoChan(key.ID, func() (any, error) {
			if e := t.held(s, fresh); e != nil {
				t.store(e, t.opts.Now())
				return e, nil
			}
			switch {
			case !fresh:
				return t.fill(mctx, s, src)
			case t.shared(s):
				return t.obtainShared(mctx, s, src, true)
			default:
				return t.mint(mctx, s, src)
			}
		})
		select {
		case r := <-ch:
			if r.Err != nil {
				return Lease{}, r.Err
			}
			last = r.Val.(*entry)
			if !fresh || t.opts.Now().Before(last.refreshAt) {
				return last.lease(), nil
			}
		case <-ctx.Done():
			return Lease{}, fmt.Errorf("credential %q: waiting for token: %w", key.Name, ctx.Err())
		}
	}
	return last.lease(), nil // usable, though due for refresh: the caller asks again later
}

// held returns the slot's token when it may be handed out now and, with
// fresh, has not reached its refresh point; otherwise nil.
func (t *Tokens) held(s *slot, fresh bool) *entry {
	now := t.opts.Now()
	s.mu.Lock()
	e := s.cur
	s.mu.Unlock()
	if e == nil || !now.Before(e.until) || fresh && !now.Before(e.refreshAt) {
		return nil
	}
	return e
}

func (e *entry) lease() Lease { return Lease{Token: e.tok, RefreshAt: e.refreshAt, Until: e.until} }
