package cache

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenbroker/tokenbroker/credential"
)

// The per-key state lives in one table: key ID → *slot, and the slot holds
// the current token itself (an atomic pointer), so a hit is one map lookup,
// one atomic load and a clock compare. There is no second cache in front of
// it (ristretto used to be one, with the slot outside it): two structures per
// key cost two lookups per hit and ~500 B per key.
//
// The table is a fixed set of shards, each a plain map[string]*slot under a
// RWMutex, picked by a seeded hash of the ID. A Go map costs ~40 B per entry
// where sync.Map's hash trie costs over 150 B (an entry node plus its share
// of indirect nodes); sharding keeps the readers of one lock few.
//
// cache.max_tokens bounds the slots. Past it, an insert evicts one slot with
// second-chance sampling: a few slots from a random point of a shard's map
// (Go randomises where iteration starts) are looked at; a slot with no
// usable token goes first, then one not hit since it was last looked at,
// else the first one looked at that may go. Each slot's hit counter is its
// reference bit, so a hit writes nothing more. A slot with a mint or refresh
// in flight (pinned) or leased by push mode is never evicted, so eviction
// never costs a second mint for one lifetime; an idle key's token is what
// goes, and asking for it again mints.

// shardCount is a power of two; 128 shards keep a 1M-key table's shards at
// ~8k entries and cost ~8 KB when empty.
const shardCount = 128

// evictSample is how many slots of a shard one eviction looks at.
const evictSample = 8

type table struct {
	seed   maphash.Seed
	total  atomic.Int64 // slots in all shards
	shards [shardCount]shard
}

type shard struct {
	mu sync.RWMutex // guards m, and the seen marks of its slots
	m  map[string]*slot
	_  [32]byte // keep neighbouring shards' locks off one cache line
}

// slot is everything the cache keeps for one key. Its fields are ordered and
// sized to fit Go's 96-byte size class.
type slot struct {
	id, name string
	cur      atomic.Pointer[credential.Token] // the last good token; nil when none
	hits     atomic.Uint64                    // lookups answered from cur; also the eviction's reference bit
	trouble  *trouble                         // failed mints; nil until one fails (guarded by mu)
	mu       sync.Mutex                       // guards trouble, lastMint, latency and the writes of cur
	lastMint int64                            // unix nanoseconds of this replica's last successful mint; 0 for none
	latency  uint32                           // microseconds the last successful mint took
	misses   atomic.Uint32
	// pins counts mints and refreshes in flight; -1 once evicted (a slot
	// evicted can never be pinned again, nor a pinned one evicted).
	pins     atomic.Int32
	seen     uint32 // low bits of hits when eviction last looked (guarded by the shard's mu)
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

// succeeded records a good token in s; s.mu held.
func (s *slot) succeeded(tok *credential.Token) {
	s.cur.Store(tok)
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

func (tb *table) init() {
	tb.seed = maphash.MakeSeed()
	for i := range tb.shards {
		tb.shards[i].m = make(map[string]*slot)
	}
}

func (tb *table) shardOf(id string) *shard {
	return &tb.shards[maphash.String(tb.seed, id)&(shardCount-1)]
}

// get is the hit path's lookup.
func (tb *table) get(id string) *slot {
	sh := tb.shardOf(id)
	sh.mu.RLock()
	s := sh.m[id]
	sh.mu.RUnlock()
	return s
}

// pin returns key's slot, made if there is none, pinned: the caller unpins it.
// inserted reports a new slot (the caller then bounds the table).
func (tb *table) pin(key Key, newSlot func(Key) *slot) (s *slot, inserted bool) {
	sh := tb.shardOf(key.ID)
	sh.mu.RLock()
	if s = sh.m[key.ID]; s != nil {
		// A slot in the map is not evicted: eviction removes it under the write lock.
		s.pins.Add(1)
	}
	sh.mu.RUnlock()
	if s != nil {
		return s, false
	}
	sh.mu.Lock()
	if s = sh.m[key.ID]; s == nil {
		s = newSlot(key)
		sh.m[key.ID] = s
		inserted = true
	}
	s.pins.Add(1)
	sh.mu.Unlock()
	if inserted {
		tb.total.Add(1)
	}
	return s, inserted
}

// remove takes key's slot out of the table whatever its state (Forget).
func (tb *table) remove(id string) *slot {
	sh := tb.shardOf(id)
	sh.mu.Lock()
	s := sh.m[id]
	if s != nil {
		delete(sh.m, id)
	}
	sh.mu.Unlock()
	if s != nil {
		tb.total.Add(-1)
	}
	return s
}

// each calls f for every slot, one shard at a time. f must not block: the
// shard's read lock is held.
func (tb *table) each(f func(*slot)) {
	for i := range tb.shards {
		sh := &tb.shards[i]
		sh.mu.RLock()
		for _, s := range sh.m {
			f(s)
		}
		sh.mu.RUnlock()
	}
}

// bound evicts slots until at most max remain, starting with the shard of
// id (the key just inserted). usable says whether a token may still be
// handed out. Evicted slots go to gone. Each eviction first looks for a
// slot with no usable token or not hit since last looked at, over every
// shard, twice (the first round takes the second chances); only then does
// it take a slot in use. It gives up when no slot may go: every one is
// pinned or leased.
func (tb *table) bound(max int64, id string, usable func(*credential.Token) bool, gone func(*slot)) {
	start := maphash.String(tb.seed, id) & (shardCount - 1)
	for tb.total.Load() > max {
		var s *slot
		for round := 0; s == nil && round < 3; round++ {
			for i := uint64(0); s == nil && i < shardCount; i++ {
				s = tb.shards[(start+i)&(shardCount-1)].evictOne(usable, round == 2)
			}
		}
		if s == nil {
			return
		}
		tb.total.Add(-1)
		gone(s)
	}
}

// evictOne evicts one slot of sh chosen by second-chance sampling, or
// returns nil when none of the slots it looks at may go. With inUse, a slot
// hit since last looked at may go too.
func (sh *shard) evictOne(usable func(*credential.Token) bool, inUse bool) *slot {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	var victim, fallback *slot
	n := 0
	for _, s := range sh.m {
		if n++; n > evictSample {
			break
		}
		if s.pins.Load() != 0 || s.flags.Load() != 0 { // pinned, refreshing or leased
			continue
		}
		if tok := s.cur.Load(); tok == nil || !usable(tok) {
			victim = s
			break
		}
		if h := uint32(s.hits.Load()); h != s.seen {
			s.seen = h // hit since last looked at: a second chance
			if fallback == nil {
				fallback = s
			}
			continue
		}
		victim = s
		break
	}
	if victim == nil && inUse {
		victim = fallback
	}
	if victim == nil || !victim.pins.CompareAndSwap(0, -1) {
		return nil // (a CAS lost to a pin: a mint just started; the caller tries elsewhere)
	}
	delete(sh.m, victim.id)
	return victim
}
