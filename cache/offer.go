package cache

import (
	"time"

	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/credential"
)

// Tokens minted while the shared tier was unreachable are known to this
// replica alone, and every other replica mints its own. Each is offered to
// the tier once it answers again, so the fleet converges back to one token
// per credential without waiting for the next refresh. The first offer to
// reach an empty key wins (SET NX); a replica that finds a usable token
// there takes it instead of its own, whichever lives longer, because only
// "first one wins" converges when offers race.

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
	tok, ok, err := t.opts.L2.Load(t.ctx, s.key)
	if err != nil {
		return false // the tier is still away
	}
	if ok && tok.Value == e.tok.Value {
		return true // ours is there
	}
	if ok && now.Before(t.newEntry(s, tok).until) {
		t.adopt(s, e, tok, now)
		return true
	}
	stored, err := t.opts.L2.Offer(t.ctx, s.key, e.tok, e.until.Sub(now))
	if err != nil {
		return false
	}
	if stored {
		t.opts.Logger.Debug("token minted while the shared cache was away offered to it", zap.String("credential", s.key.Name))
		return true
	}
	return false // another replica's offer came first: take it next round
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
