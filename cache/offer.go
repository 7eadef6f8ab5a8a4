package cache

import (
	"time"

	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/credential"
)

// Tokens minted while the shared tier was unreachable are known to this
// replica alone, and every other replica mints its own. Each is offered to
// the tier once it answers again, so the fleet converges back to one token
// per credential without waiting for the next refresh. An offer replaces
// what the tier holds unless that is a usable token not yet due for
// refresh, which the replica takes instead of its own (so a fleet never
// converges on a token about to be refreshed); the replacement is a
// compare-and-set, so of offers racing for one key exactly one wins and the
// others take it on their next try.

// defaultOfferEvery is how often tokens waiting to be offered are tried.
const defaultOfferEvery = time.Second

// maxOffers bounds the tokens waiting to be offered, so an outage of the
// tier during a flood of new keys (broker clients) cannot grow this list
// without bound. Tokens past it are shared at their next refresh instead.
const maxOffers = 10000

// offered is a token waiting to be offered, with the slot it was minted for.
type offered struct {
	s   *slot
	tok *credential.Token
}

// pendOffer queues tok, minted for s without the tier, to be offered to it.
func (t *Tokens) pendOffer(s *slot, tok *credential.Token) {
	t.offerMu.Lock()
	defer t.offerMu.Unlock()
	if _, queued := t.offers[s.id]; !queued && len(t.offers) >= maxOffers {
		return
	}
	t.offers[s.id] = offered{s, tok}
	if !t.offering && t.ctx.Err() == nil {
		t.offering = true
		t.offerWG.Go(t.offerLoop)
	}
}

// offerLoop tries every queued token each OfferEvery until none is left.
func (t *Tokens) offerLoop() {
	tick := time.NewTicker(t.opts.OfferEvery)
	defer tick.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-tick.C:
		}
		t.offerMu.Lock()
		queued := make([]offered, 0, len(t.offers))
		for _, o := range t.offers {
			queued = append(queued, o)
		}
		t.offerMu.Unlock()
		for _, o := range queued {
			if !t.offer(o) {
				continue
			}
			t.offerMu.Lock()
			if t.offers[o.s.id] == o { // not replaced by a newer local mint meanwhile
				delete(t.offers, o.s.id)
			}
			t.offerMu.Unlock()
		}
		t.offerMu.Lock()
		if len(t.offers) == 0 {
			t.offering = false
			t.offerMu.Unlock()
			return
		}
		t.offerMu.Unlock()
	}
}

// offer tries once to reconcile o with the tier; true means done.
func (t *Tokens) offer(o offered) bool {
	s, e := o.s, o.tok
	now := t.opts.Now()
	set := t.level()
	until := set.until(e)
	if t.slots.load(s) != e || !now.Before(until) {
		return true // refreshed, adopted or invalidated since, or no longer usable: nothing to offer
	}
	keep := func(x credential.Token) bool {
		if x.Value == e.Value {
			return true
		}
		n := t.hold(x, now)
		return now.Before(set.until(n)) && now.Before(set.refreshAt(n))
	}
	stored, kept, err := t.opts.L2.Offer(t.ctx, s.key(), *e, until.Sub(now), keep)
	switch {
	case err != nil:
		return false // the tier is still away
	case stored:
		t.opts.Logger.Debug("token minted while the shared cache was away offered to it", zap.String("credential", s.name))
		return true
	case kept.Value == "":
		return false // another replica's offer won the race: take it next round
	case kept.Value != e.Value:
		t.adopt(s, e, kept, now)
	}
	return true
}

// adopt replaces e, this replica's own token in s, by the fleet's tok,
// unless s has moved on since (a refresh or an invalidation).
func (t *Tokens) adopt(s *slot, e *credential.Token, tok credential.Token, now time.Time) {
	n := t.hold(tok, now)
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.slots.load(s) != e {
		return
	}
	t.slots.store(s, n)
	t.memo.changed()
	t.opts.Logger.Debug("token minted while the shared cache was away replaced by the fleet's", zap.String("credential", s.name))
}
