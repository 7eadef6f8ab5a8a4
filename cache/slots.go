package cache

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenbroker/tokenbroker/credential"
)

// slot is what the cache keeps for one key besides its cell (table.go): what
// a miss, a refresh and the status page need. Its fields are ordered and
// sized to fit Go's 80-byte size class.
type slot struct {
	id, name string
	trouble  *trouble   // failed mints; nil until one fails (guarded by mu)
	mu       sync.Mutex // guards trouble, lastMint, latency and the writes of the token in its cell
	lastMint int64      // unix nanoseconds of this replica's last successful mint; 0 for none
	latency  uint32     // microseconds the last successful mint took
	misses   atomic.Uint32
	// pins counts mints and refreshes in flight; -1 once evicted (a slot
	// evicted can never be pinned again, nor a pinned one evicted).
	pins     atomic.Int32
	seen     uint32 // low bits of its cell's hits when eviction last looked (guarded by the shard's mu)
	local    bool
	labelled bool          // has a metric label of its own (else OtherCredentials)
	flags    atomic.Uint32 // flagRefreshing | flagLeased (one word: an atomic.Bool is 4 bytes too)
}

const (
	flagRefreshing = 1 << iota // a background refresh runs
	flagLeased                 // push mode asked for it: never evicted
)

// startRefresh claims s's one background refresh; false when one runs.
func (s *slot) startRefresh() bool {
	for {
		f := s.flags.Load()
		if f&flagRefreshing != 0 {
			return false
		}
		if s.flags.CompareAndSwap(f, f|flagRefreshing) {
			return true
		}
	}
}

func (s *slot) endRefresh()      { s.flags.And(^uint32(flagRefreshing)) }
func (s *slot) refreshing() bool { return s.flags.Load()&flagRefreshing != 0 }
func (s *slot) lease()           { s.flags.Or(flagLeased) }

// trouble is a slot's memory of failed mints, allocated on the first failure:
// most keys never fail, and the fields cost ~100 B.
type trouble struct {
	failures    int       // consecutive failed mints
	nextAttempt time.Time // no mint before this instant
	lastErr     error
	lastFailure failure // the latest failed mint, kept after a success (status page)
	// rejected fingerprints the token an Invalidate dropped (see
	// fingerprint; 0: none), so that a copy of it still in the shared tier
	// is not adopted again.
	rejected uint64
}

// fingerprint tells tokens apart without keeping their value: a seeded hash
// of the value and the expiry, never 0.
func fingerprint(tok *credential.Token) uint64 {
	return (hashID(tok.Value) ^ uint64(tok.Expiry.UnixNano())*0x9e3779b97f4a7c15) | 1
}

// rejects reports whether tok is the token an Invalidate dropped; s.mu held.
func (s *slot) rejects(tok *credential.Token) bool {
	return s.trouble != nil && s.trouble.rejected != 0 && s.trouble.rejected == fingerprint(tok)
}

func (s *slot) key() Key { return Key{ID: s.id, Name: s.name, Local: s.local} }

// tryPin marks a mint or refresh in flight; false when s was evicted.
func (s *slot) tryPin() bool {
	for {
		p := s.pins.Load()
		if p < 0 {
			return false
		}
		if s.pins.CompareAndSwap(p, p+1) {
			return true
		}
	}
}

func (s *slot) unpin() { s.pins.Add(-1) }

// succeeded records a good token for s; s.mu held.
func (tb *table) succeeded(s *slot, tok *credential.Token) {
	tb.store(s, tok)
	if s.trouble != nil {
		s.trouble.failures, s.trouble.lastErr, s.trouble.nextAttempt = 0, nil, time.Time{}
	}
}

// backoffUntil is when the next mint may be asked; s.mu held.
func (s *slot) backoffUntil() time.Time {
	if s.trouble == nil {
		return time.Time{}
	}
	return s.trouble.nextAttempt
}
