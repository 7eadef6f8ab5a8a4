package cache

import (
	"context"
	"sort"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/tokenbroker/tokenbroker/credential"
)

// SlotState is a read-only view of one cached key for status pages. It
// never holds the token itself.
type SlotState struct {
	Key         Key
	HasToken    bool      // a token is held (it may have expired)
	Expiry      time.Time // the held token's expiry
	Until       time.Time // last instant it is handed out (expiry − margin)
	Refreshing  bool      // a background refresh is running
	Failures    int       // consecutive failed mints
	LastError   string    // the last mint failure (IdP errors never quote a token)
	NextAttempt time.Time // no mint before this instant
	LastMint    time.Time
	LastLatency time.Duration
	// LastFailure is why the latest failed mint failed (secret-free, as
	// LastError) and LastFailureAt when; both stay after a later success.
	LastFailure   string
	LastFailureAt time.Time
	Hits          uint64 // lookups answered from cache (mints avoided)
	Misses        uint64
}

// Snapshot returns the state of every key, sorted by name then ID.
func (t *Tokens) Snapshot() []SlotState {
	var out []SlotState
	t.slots.Range(func(_, v any) bool {
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
		out = append(out, st)
		return true
	})
	sort.Slice(out, func(i, j int) bool {
		if out[i].Key.Name != out[j].Key.Name {
			return out[i].Key.Name < out[j].Key.Name
		}
		return out[i].Key.ID < out[j].Key.ID
	})
	return out
}

// Peek returns key's token if one may be handed out now, without minting,
// refreshing or counting a lookup.
func (t *Tokens) Peek(key Key) (credential.Token, bool) {
	v, ok := t.slots.Load(key.ID)
	if !ok {
		return credential.Token{}, false
	}
	s := v.(*slot)
	s.mu.Lock()
	cur := s.cur
	s.mu.Unlock()
	if cur == nil || !t.opts.Now().Before(cur.until) {
		return credential.Token{}, false
	}
	return cur.tok, true
}

// CredentialLabel is the metric label value for a credential (or broker
// key) name: the name itself, or OtherCredentials past
// CredentialSeriesLimit. Collectors outside this package use it so that
// every per-credential family shares one bound.
func (t *Tokens) CredentialLabel(name string) string { return t.opts.Meter.label(name) }

// Now is the cache's clock, so callers compute remaining lifetimes the same way.
func (t *Tokens) Now() time.Time { return t.opts.Now() }

// ExpiryMargin is how long before its expiry a token stops being handed out.
func (t *Tokens) ExpiryMargin() time.Duration { return t.level().ExpiryMargin }

func (c counter) value() uint64 {
	if c.c == nil {
		return 0
	}
	var m dto.Metric
	if c.c.Write(&m) != nil || m.Counter == nil {
		return 0
	}
	return uint64(m.Counter.GetValue())
}

// Lookup returns key's token if one may be handed out now: this process's,
// or else the fleet's from the shared tier. It never mints, never takes the
// fleet lock and keeps nothing: a caller that has not proven it may use the
// token (the broker, before checking a secret's binding) costs no state.
func (t *Tokens) Lookup(ctx context.Context, key Key) (credential.Token, bool) {
	if tok, ok := t.Peek(key); ok || t.opts.L2 == nil {
		return tok, ok
	}
	tok, ok, err := t.opts.L2.Load(ctx, key)
	if err != nil || !ok || !t.opts.Now().Before(tok.Expiry.Add(-t.opts.ExpiryMargin)) {
		return credential.Token{}, false
	}
	return tok, true
}
