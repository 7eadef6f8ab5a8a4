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

// pendOffer queues e, minted without the tier, to be offered to it.
func (t *Tokens) pendOffer(e *entry) {
	t.offerMu.Lock()
	defer t.offerMu.Unlock()
	if _, queued := t.offers[e.slot.key.ID]; !queued && len(t.offers) >= maxOffers {
		return
	}
	t.offers[e.slot.key.ID] = e
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
		queued := make([]*entry, 0, len(t.offers))
		for _, e := range t.offers {
			queued = append(queued, e)
		}
		t.offerMu.Unlock()
		for _, e := range queued {
			if !t.offer(e) {
				continue
			}
			t.offerMu.Lock()
			if t.offers[e.slot.key.ID] == e { // not replaced by a newer local mint meanwhile
				delete(t.offers, e.slot.key.ID)
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

// offer tries once to reconcile e with the tier; true means done.
func (t *Tokens) offer(e *entry) bool {
	s := e.slot
	now := t.opts.Now()
	s.mu.Lock()
	cur := s.cur
	s.mu.Unlock()
	if cur != e || !now.Before(e.until) {
		return true // refreshed, adopted or invalidated since, or no longer usable: nothing to offer
	}
	keep := func(x credential.Token) bool {
		if x.Value == e.tok.Value {
			return true
		}
		n := t.newEntry(s, x)
		return now.Before(n.until) && now.Before(n.refreshAt)
	}
	stored, kept, err := t.opts.L2.Offer(t.ctx, s.key, e.tok, e.until.Sub(now), keep)
	switch {
	case err != nil:
		return false // the tier is still away
	case stored:
		t.opts.Logger.Debug("token minted while the shared cache was away offered to it", zap.String("credential", s.key.Name))
		return true
	case kept.Value == "":
		return false // another replica's offer won the race: take it next round
	case kept.Value != e.tok.Value:
		t.adopt(s, e, kept, now)
	}
	return true
}

// adopt replaces e, this replica's own token in s, by the fleet's tok,
// unless s has moved on since (a refresh or an invalidation).
func (t *Tokens) adopt(s *slot, e *entry, tok credential.Token, now time.Time) {
	n := t.newEntry(s, tok)
	s.mu.Lock()
	if s.cur != e {
		s.mu.Unlock()
		return
	}
	s.cur = n
	s.mu.Unlock()
	t.store(n, now)
	t.opts.Logger.Debug("token minted while the shared cache was away replaced by the fleet's", zap.String("credential", s.key.Name))
}
