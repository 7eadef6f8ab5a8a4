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
	s := t.pin(key)
	defer s.unpin()
	// Push mode keeps this token fresh on its own timers: evicting it would
	// cost its subscribers a second mint, so a leased slot stays (until Forget).
	s.lease()
	mctx := t.detach(ctx) // the cache's lifetime, the caller's trace
	var last *credential.Token
	// Two rounds: a fresh Lease that joined a flight which only returned the
	// old token (a concurrent cold Get) goes once more.
	for range 2 {
		if tok := t.held(s, fresh); tok != nil {
			return t.lease(tok), nil
		}
		ch := t.group.DoChan(key.ID, func() (any, error) {
			return t.flight(key, func(s *slot) (any, error) {
				if tok := t.held(s, fresh); tok != nil {
					return tok, nil
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
		})
		select {
		case r := <-ch:
			if r.Err != nil {
				return Lease{}, r.Err
			}
			last = r.Val.(*credential.Token)
			if !fresh || t.opts.Now().Before(t.level().refreshAt(last)) {
				return t.lease(last), nil
			}
		case <-ctx.Done():
			return Lease{}, fmt.Errorf("credential %q: waiting for token: %w", key.Name, ctx.Err())
		}
	}
	return t.lease(last), nil // usable, though due for refresh: the caller asks again later
}

// held returns the slot's token when it may be handed out now and, with
// fresh, has not reached its refresh point; otherwise nil.
func (t *Tokens) held(s *slot, fresh bool) *credential.Token {
	now := t.opts.Now()
	set := t.level()
	tok := t.slots.load(s)
	if tok == nil || !now.Before(set.until(tok)) || fresh && !now.Before(set.refreshAt(tok)) {
		return nil
	}
	return tok
}

func (t *Tokens) lease(tok *credential.Token) Lease {
	set := t.level()
	return Lease{Token: *tok, RefreshAt: set.refreshAt(tok), Until: set.until(tok)}
}
