package cache

import (
	"fmt"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// Settings are what a running cache can change: how many tokens L1 holds,
// and when a token stops being handed out and starts being refreshed.
type Settings struct {
	MaxTokens    int64         // default 100000
	ExpiryMargin time.Duration // a token is never returned within this of its expiry
	RefreshAhead float64       // refresh when less than this fraction of the usable lifetime is left (default 0.2)
}

func (s Settings) withDefaults() Settings {
	if s.MaxTokens <= 0 {
		s.MaxTokens = 100000
	}
	if s.RefreshAhead <= 0 || s.RefreshAhead >= 1 {
		s.RefreshAhead = 0.2
	}
	return s
}

// level1 is ristretto together with the settings its entries' deadlines
// were computed with. Reconfigure replaces it whole. An entry that belongs
// to an earlier level1 is never handed out: the lookup misses and fill
// rebuilds it from its slot, which still holds the token — so new settings
// never cost a mint.
type level1 struct {
	Settings
	store *ristretto.Cache[string, *entry]
}

func newStore(maxTokens int64) (*ristretto.Cache[string, *entry], error) {
	c, err := ristretto.NewCache(&ristretto.Config[string, *entry]{
		NumCounters:        maxTokens * 10, // ristretto's advice: 10× the items
		MaxCost:            maxTokens,
		BufferItems:        64,
		IgnoreInternalCost: true, // cost 1 per token: MaxCost counts tokens
	})
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	return c, nil
}

// Reconfigure applies s to the running cache; the next lookup decides with
// it. A new MaxTokens builds a new, empty ristretto and closes the old one:
// tokens are not lost, because every slot keeps its token and the next
// lookup of each key restores it from there, without minting. A new margin
// or refresh point applies to the tokens already held as well.
func (t *Tokens) Reconfigure(s Settings) error {
	s = s.withDefaults()
	old := t.level()
	if s == old.Settings {
		return nil
	}
	next := &level1{Settings: s, store: old.store}
	if s.MaxTokens != old.MaxTokens {
		store, err := newStore(s.MaxTokens)
		if err != nil {
			return err
		}
		next.store = store
	}
	// The write lock waits out every lookup still using the old ristretto,
	// which is not safe to close under a concurrent Get or Set.
	t.l1mu.Lock()
	t.l1 = next
	t.l1mu.Unlock()
	if next.store != old.store {
		old.store.Close()
	}
	// Give the held tokens their new deadlines now, so Peek and the status
	// page agree with the next lookup.
	t.slots.Range(func(_, v any) bool {
		t.renew(v.(*slot))
		return true
	})
	return nil
}

// Settings returns the settings in force.
func (t *Tokens) Settings() Settings { return t.level().Settings }

func (t *Tokens) level() *level1 {
	t.l1mu.RLock()
	defer t.l1mu.RUnlock()
	return t.l1
}

// lookup is the hit path's read of L1: an entry made under settings no
// longer in force counts as a miss.
func (t *Tokens) lookup(id string) (*entry, bool) {
	t.l1mu.RLock()
	l1 := t.l1
	e, ok := l1.store.Get(id)
	t.l1mu.RUnlock()
	return e, ok && e.l1 == l1
}

func (t *Tokens) drop(id string) {
	t.l1mu.RLock()
	defer t.l1mu.RUnlock()
	t.l1.store.Del(id)
}

// renew returns s's token with deadlines from the settings in force,
// rebuilding its entry if Reconfigure replaced them; nil when s holds none.
func (t *Tokens) renew(s *slot) *entry {
	l1 := t.level()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && s.cur.l1 != l1 {
		s.cur = t.newEntry(s, s.cur.tok)
	}
	return s.cur
}

// BreakerReset says on m that the shared tier is a new client now: its
// breaker starts closed, whatever the replaced client's breaker was.
func (m *L2Metrics) BreakerReset() { m.state.Set(float64(breakerClosed)) }
