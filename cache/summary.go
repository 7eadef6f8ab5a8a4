package cache

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenbroker/tokenbroker/credential"
)

// What periodic readers (metrics scrapes, the status page) get from the
// cache without walking every key more often than needed: the lookup
// counters live in the table's cells (a hit writes nothing shared), so a scrape sums
// them, but only when something happened since the previous sum. An idle
// tokenbroker holding 100k tokens walks nothing per tick, and one under
// traffic walks once per scrape, allocating only per label (bounded by
// CredentialSeriesLimit).

// labelMemo is the per-label sum of the slots' lookups and soonest expiry,
// as the last walk computed it, valid until a lookup, a token change or a
// key leaving the table marks it stale.
type labelMemo struct {
	stale atomic.Bool // set by any change since the last walk

	mu   sync.Mutex // guards sums and done
	done bool       // sums were computed at least once
	sums map[string]labelSum
}

// labelSum is one label's lookups and the soonest expiry of its held tokens
// (zero when none is held).
type labelSum struct {
	lookups
	soonest time.Time
}

// looked marks the memo stale after a hit. It reads before writing, so the
// hit path's only shared access is a load of a line that stays in every
// core's cache between scrapes.
func (m *labelMemo) looked() {
	if !m.stale.Load() {
		m.stale.Store(true)
	}
}

// changed marks the memo stale after a miss, a token stored, invalidated or
// adopted, or a key leaving the table; callers mark after the change is
// visible.
func (m *labelMemo) changed() { m.stale.Store(true) }

// labelSums returns each label's lookups (of keys in the table; keys gone
// are in Metrics.retired) and soonest expiry. It walks the keys only when
// something changed since the previous call; the caller must not modify the
// map.
func (t *Tokens) labelSums() map[string]labelSum {
	m := &t.memo
	m.mu.Lock()
	defer m.mu.Unlock()
	// Clear before walking: a change during the walk marks it again, so the
	// next call walks again rather than trusting a half-seen change.
	if !m.stale.Swap(false) && m.done {
		return m.sums
	}
	sums := make(map[string]labelSum, len(m.sums))
	t.slots.each(func(s *slot, cur *credential.Token, hits uint64) {
		l := labelOf(s)
		c := sums[l]
		c.hits += hits
		c.misses += uint64(s.misses.Load())
		if cur != nil && (c.soonest.IsZero() || cur.Expiry.Before(c.soonest)) {
			c.soonest = cur.Expiry
		}
		sums[l] = c
	})
	m.sums, m.done = sums, true
	return sums
}

// LabelHits returns the lookups answered from cache per credential label,
// the tokenbroker_cache_lookups_total{result="hit"} series, in O(labels)
// when nothing changed since the last read. Names past
// CredentialSeriesLimit (credentials and broker keys alike) are counted
// under OtherCredentials.
func (t *Tokens) LabelHits() map[string]uint64 {
	out := map[string]uint64{}
	for l, r := range t.opts.Meter.retiredLookups() {
		out[l] += r.hits
	}
	for l, c := range t.labelSums() {
		out[l] += c.hits
	}
	return out
}

// State returns the state of one key, as Snapshot would, without copying
// every other key's: the status page builds only the rows it shows.
func (t *Tokens) State(key Key) (SlotState, bool) {
	s, cur, hits := t.slots.view(key.ID)
	if s == nil {
		return SlotState{}, false
	}
	return stateOf(s, cur, hits, t.level()), true
}
