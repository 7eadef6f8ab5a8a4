package cache

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// What periodic readers (metrics scrapes, the status page) get from the
// cache without walking every key: the cost of a scrape follows the number
// of credential labels (bounded by CredentialSeriesLimit) or the number of
// changes since the last one, not the number of cached keys. An idle
// tokenbroker holding 100k tokens must not pay 100k of anything per tick.

// expiryMemo is the soonest expiry per credential label, as the last scrape
// computed it, valid until a token is stored, invalidated or forgotten.
type expiryMemo struct {
	gen atomic.Uint64 // bumped after every change of a slot's token

	mu      sync.Mutex // guards at and soonest
	at      uint64     // gen the memo was computed at; 0: never
	soonest map[string]time.Time
}

// tokenChanged records that some slot's token changed (stored, invalidated
// or forgotten); callers bump it after the change is visible.
func (t *Tokens) tokenChanged() { t.expiries.gen.Add(1) }

// soonestExpiries returns each label's soonest token expiry. It walks the
// keys only when a token changed since the previous call; the caller must
// not modify the map.
func (t *Tokens) soonestExpiries(label func(string) string) map[string]time.Time {
	m := &t.expiries
	m.mu.Lock()
	defer m.mu.Unlock()
	// Read gen before walking: a change during the walk bumps it again, so
	// the next call walks again rather than trusting a half-seen change.
	g := m.gen.Load() + 1 // +1: a fresh cache (gen 0) still walks once
	if m.at == g && m.soonest != nil {
		return m.soonest
	}
	soonest := make(map[string]time.Time, len(m.soonest))
	t.slots.Range(func(_, v any) bool {
		s := v.(*slot)
		s.mu.Lock()
		cur := s.cur
		s.mu.Unlock()
		if cur == nil {
			return true
		}
		l := label(s.key.Name)
		if e, ok := soonest[l]; !ok || cur.tok.Expiry.Before(e) {
			soonest[l] = cur.tok.Expiry
		}
		return true
	})
	m.at, m.soonest = g, soonest
	return soonest
}

// LabelHits returns the lookups answered from cache per credential label:
// the tokenbroker_cache_lookups_total{result="hit"} series of this cache's
// registry, read in O(labels). Names past CredentialSeriesLimit (credentials
// and broker keys alike) are counted under OtherCredentials.
func (t *Tokens) LabelHits() map[string]uint64 {
	ch := make(chan prometheus.Metric, 64)
	go func() {
		t.opts.Meter.lookups.Collect(ch)
		close(ch)
	}()
	out := map[string]uint64{}
	var m dto.Metric
	for metric := range ch {
		m.Reset()
		if metric.Write(&m) != nil || m.Counter == nil {
			continue
		}
		var label, result string
		for _, lp := range m.GetLabel() {
			switch lp.GetName() {
			case "credential":
				label = lp.GetValue()
			case "result":
				result = lp.GetValue()
			}
		}
		if result == "hit" {
			out[label] += uint64(m.Counter.GetValue())
		}
	}
	return out
}

// State returns the state of one key, as Snapshot would, without copying
// every other key's: the status page builds only the rows it shows.
func (t *Tokens) State(key Key) (SlotState, bool) {
	v, ok := t.slots.Load(key.ID)
	if !ok {
		return SlotState{}, false
	}
	s := v.(*slot)
	st := SlotState{Key: s.key, Refreshing: s.refreshing.Load(), Hits: s.hits.value(), Misses: s.misses.value()}
	s.mu.Lock()
	if s.cur != nil {
		st.HasToken, st.Expiry, st.Until = true, s.cur.tok.Expiry, s.cur.until
	}
	st.Failures, st.NextAttempt = s.failures, s.nextAttempt
	st.LastMint, st.LastLatency = s.lastMint, s.lastLatency
	st.LastFailure, st.LastFailureAt = s.lastFailure.text, s.lastFailure.at
	if s.lastErr != nil {
		st.LastError = s.lastErr.Error()
	}
	s.mu.Unlock()
	return st, true
}
