package cache

import (
	"context"
	"sort"
	"time"

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
	type seen struct {
		s    *slot
		cur  *credential.Token
		hits uint64
	}
	var slots []seen
	t.slots.each(func(s *slot, cur *credential.Token, hits uint64) { slots = append(slots, seen{s, cur, hits}) })
	set := t.level()
	out := make([]SlotState, 0, len(slots))
	for _, v := range slots {
		out = append(out, stateOf(v.s, v.cur, v.hits, set))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Key.Name != out[j].Key.Name {
			return out[i].Key.Name < out[j].Key.Name
		}
		return out[i].Key.ID < out[j].Key.ID
	})
	return out
}

// stateOf is the state of s, holding cur with hits counted, under the
// settings set.
func stateOf(s *slot, cur *credential.Token, hits uint64, set *Settings) SlotState {
	st := SlotState{Key: s.key(), Refreshing: s.refreshing(), Hits: hits, Misses: uint64(s.misses.Load())}
	if cur != nil {
		st.HasToken, st.Expiry, st.Until = true, cur.Expiry, set.until(cur)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastMint != 0 {
		st.LastMint, st.LastLatency = time.Unix(0, s.lastMint).UTC(), time.Duration(s.latency)*time.Microsecond
	}
	if tr := s.trouble; tr != nil {
		st.Failures, st.NextAttempt = tr.failures, tr.nextAttempt
		st.LastFailure, st.LastFailureAt = tr.lastFailure.text, tr.lastFailure.at
		if tr.lastErr != nil {
			st.LastError = tr.lastErr.Error()
		}
	}
	return st
}

// Peek returns key's token if one may be handed out now, without minting,
// refreshing or counting a lookup.
func (t *Tokens) Peek(key Key) (credential.Token, bool) {
	s, cur, _ := t.slots.view(key.ID)
	if s == nil {
		return credential.Token{}, false
	}
	if cur == nil || !t.opts.Now().Before(t.level().until(cur)) {
		return credential.Token{}, false
	}
	return *cur, true
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

// Lookup returns key's token if one may be handed out now: this process's,
// or else the fleet's from the shared tier. It never mints, never takes the
// fleet lock and keeps nothing: a caller that has not proven it may use the
// token (the broker, before checking a secret's binding) costs no state.
func (t *Tokens) Lookup(ctx context.Context, key Key) (credential.Token, bool) {
	if tok, ok := t.Peek(key); ok || t.opts.L2 == nil {
		return tok, ok
	}
	tok, ok, err := t.opts.L2.Load(ctx, key)
	if err != nil || !ok || !t.opts.Now().Before(tok.Expiry.Add(-t.ExpiryMargin())) {
		return credential.Token{}, false
	}
	return tok, true
}
