package cache

import (
	"hash/maphash"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/tokenbroker/tokenbroker/credential"
)

// The per-key state lives in one table: key ID → cell → *slot. A cell holds
// what a hit needs — the key, the current token, its expiry and issue
// instants (deadline.go) and the hit counter — so a hit reads one cell and
// nothing else (not the slot, not the token: the caller reads the token it
// is handed): spread over 100k keys, every pointer followed is a CPU cache
// miss (~70–150 ns here), and a Go map costs two of them before its value
// is even read. There is no second cache in front of it (ristretto used to
// be one). The filter's keys carry their ID's hash (Key.Hashed), so a hit
// does not read the ID's bytes either: a caller's ID is the very string the
// cell keeps, and comparing them compares two pointers.
//
// The table is a fixed set of shards, picked by a seeded hash of the ID, each
// an open-addressing array of cells under a RWMutex: linear probing from the
// hash's home cell, growth by doubling, deletion by backward shift (no
// tombstones), shrinking by halving at 1/8 full. A cell is 64 bytes, one
// CPU cache line where it matters: an array of 512 cells or more (32 KB;
// every shard's once the table holds ~30k keys) is a large object, which Go
// starts on a page (TestSlotFitsItsSizeClass). Smaller arrays of more than
// 8 cells start 8 bytes past a line (the malloc header Go puts before a
// small object with pointers over 512 bytes), so their cells span two
// lines; such a table has at most 2 MB of cells, which the CPU keeps in
// its caches.
// Readers take the read lock and add hits atomically; every write of a
// cell's token and stamp (store) and every move of a cell (growth, a
// backward shift) happens under the write lock, so no reader sees a token
// with another token's deadlines, or a half-moved cell.
//
// cache.max_tokens bounds the slots. Past it, an insert evicts one slot with
// second-chance sampling: a few cells from a random point of a shard are
// looked at; a slot with no usable token goes first, then one not hit since
// it was last looked at, else the first one looked at that may go. Each
// cell's hit counter is its reference bit, so a hit writes nothing more. A
// slot with a mint or refresh in flight (pinned) or leased by push mode is
// never evicted, so eviction never costs a second mint for one lifetime; an
// idle key's token is what goes, and asking for it again mints.

// shardCount is a power of two; 128 shards keep a 1M-key table's shards at
// ~8k cells and the readers of one lock few.
const shardCount = 128

// evictSample is how many slots of a shard one eviction looks at.
const evictSample = 8

// minCells is a shard's first array; maxLoad is how full (in eighths) an
// array may get before it doubles. 100k keys leave shards ~3/4 full of
// 1,024 cells, where a hit looks at ~3.4 cells (neighbouring lines, fetched
// together) and an absent key, such as an unknown broker client, at ~11 (it
// stops at the first empty cell); just before a doubling, at 7/8, runs are
// about twice as long. The seeded hash keeps a caller from choosing where
// its keys land, so runs stay as short as chance makes them.
const (
	minCells = 8
	maxLoad  = 7 // eighths
)

type table struct {
	total  atomic.Int64 // slots in all shards
	shards [shardCount]shard
}

type shard struct {
	mu    sync.RWMutex // guards the array, n, every cell but its hits, and the seen marks of its slots
	cells []cell       // len a power of two
	n     int          // cells in use
	_     [72]byte     // 128 bytes: keep neighbouring shards' locks off one cache line pair
}

// cell is one key's place in a shard. The key is kept as the slot's own id
// bytes (pointer and length, not a second copy).
type cell struct {
	tag   uint32            // hash bits 32–62 with bit 31 set; 0 marks an empty cell
	n     uint32            // len(id) (IDs are identity hashes, nowhere near 4 GiB)
	p     *byte             // the id's bytes
	cur   *credential.Token // the last good token; nil when none
	hits  atomic.Uint64     // lookups answered from cur; also the eviction's reference bit
	owner *slot
	exp   int64  // cur's Expiry, stamped (deadline.go)
	iss   int64  // cur's Issued, stamped
	kind  uint32 // how exp and iss are stamped
	_     uint32 // 64 bytes: one cache line
}

// keySeed seeds every key's hash, so a Key can carry its hash (Key.Hashed)
// from one table to another; per process, so a caller cannot choose where
// its keys land.
var keySeed = maphash.MakeSeed()

func hashID(id string) uint64 { return maphash.String(keySeed, id) }

// locate is the shard of the ID hashed to h, and its tag within the shard.
func (tb *table) locate(h uint64) (*shard, uint32) {
	return &tb.shards[h&(shardCount-1)], uint32(h>>32) | 1<<31
}

// hit is the hit path: the token of id (hashed to h) when it may be handed out now (counting
// the hit), else nil, and whether its refresh is due. It reads the cell
// only: not the slot, and not the token unless its stamp cannot decide
// (deadline.go).
func (tb *table) hit(h uint64, id string, now time.Time, set *Settings) (tok *credential.Token, due bool) {
	sh, tag := tb.locate(h)
	sh.mu.RLock()
	if i := sh.find(tag, id); i >= 0 {
		c := &sh.cells[i]
		if t := c.cur; t != nil {
			ok, d, exact := set.decide(c.kind, c.exp, c.iss, now)
			if exact {
				ok = now.Before(set.until(t))
				d = !now.Before(set.refreshAt(t))
			}
			if ok {
				c.hits.Add(1) // under the read lock: the cell cannot move meanwhile
				tok, due = t, d
			}
		}
	}
	sh.mu.RUnlock()
	return tok, due
}

// get returns id's slot, or nil.
func (tb *table) get(id string) *slot {
	s, _, _ := tb.view(id)
	return s
}

// view returns id's slot with its token and hits, or a nil slot.
func (tb *table) view(id string) (s *slot, cur *credential.Token, hits uint64) {
	sh, tag := tb.locate(hashID(id))
	sh.mu.RLock()
	if i := sh.find(tag, id); i >= 0 {
		c := &sh.cells[i]
		s, cur, hits = c.owner, c.cur, c.hits.Load()
	}
	sh.mu.RUnlock()
	return s, cur, hits
}

// load returns s's token; nil when it has none or s has left the table.
func (tb *table) load(s *slot) *credential.Token {
	sh, tag := tb.locate(hashID(s.id))
	var tok *credential.Token
	sh.mu.RLock()
	if i := sh.find(tag, s.id); i >= 0 && sh.cells[i].owner == s {
		tok = sh.cells[i].cur
	}
	sh.mu.RUnlock()
	return tok
}

// store makes tok s's token. A slot that has left the table (Forget,
// eviction) keeps nothing: nobody can find it, and a new slot for its key
// has a cell of its own. Writers of a slot's token hold s.mu, so a load
// then a store under it is a compare-and-set. The token and its stamp are
// written under the shard's write lock, so a hit sees both or neither (once
// per mint, so readers of the shard wait rarely).
func (tb *table) store(s *slot, tok *credential.Token) {
	kind, exp, iss := stampOf(tok)
	sh, tag := tb.locate(hashID(s.id))
	sh.mu.Lock()
	if i := sh.find(tag, s.id); i >= 0 && sh.cells[i].owner == s {
		c := &sh.cells[i]
		c.cur, c.kind, c.exp, c.iss = tok, kind, exp, iss
	}
	sh.mu.Unlock()
}

// pin returns key's slot, made if there is none, pinned: the caller unpins it.
// inserted reports a new slot (the caller then bounds the table).
func (tb *table) pin(key Key, newSlot func(Key) *slot) (s *slot, inserted bool) {
	sh, tag := tb.locate(key.hashOf())
	sh.mu.RLock()
	if i := sh.find(tag, key.ID); i >= 0 {
		// A slot in the table is not evicted: eviction removes it under the write lock.
		s = sh.cells[i].owner
		s.pins.Add(1)
	}
	sh.mu.RUnlock()
	if s != nil {
		return s, false
	}
	sh.mu.Lock()
	if i := sh.find(tag, key.ID); i >= 0 {
		s = sh.cells[i].owner
	} else {
		s = newSlot(key)
		sh.insert(tag, s)
		inserted = true
	}
	s.pins.Add(1)
	sh.mu.Unlock()
	if inserted {
		tb.total.Add(1)
	}
	return s, inserted
}

// remove takes key's slot out of the table whatever its state (Forget),
// with the hits its cell counted.
func (tb *table) remove(id string) (*slot, uint64) {
	sh, tag := tb.locate(hashID(id))
	sh.mu.Lock()
	var s *slot
	var hits uint64
	if i := sh.find(tag, id); i >= 0 {
		s, hits = sh.cells[i].owner, sh.cells[i].hits.Load()
		sh.delete(uint32(i))
	}
	sh.mu.Unlock()
	if s != nil {
		tb.total.Add(-1)
	}
	return s, hits
}

// each calls f for every slot with its token and hits, one shard at a time.
// f must not block: the shard's read lock is held.
func (tb *table) each(f func(s *slot, cur *credential.Token, hits uint64)) {
	for i := range tb.shards {
		sh := &tb.shards[i]
		sh.mu.RLock()
		for j := range sh.cells {
			if c := &sh.cells[j]; c.tag != 0 {
				f(c.owner, c.cur, c.hits.Load())
			}
		}
		sh.mu.RUnlock()
	}
}

// bound evicts slots until at most max remain, starting with the shard of
// id (the key just inserted). usable says whether a token may still be
// handed out. Evicted slots go to gone, with their hits. Each eviction first
// looks for a slot with no usable token or not hit since last looked at,
// over every shard, twice (the first round takes the second chances); only
// then does it take a slot in use. It gives up when no slot may go: every
// one is pinned or leased.
func (tb *table) bound(max int64, id string, usable func(*credential.Token) bool, gone func(*slot, uint64)) {
	start := hashID(id) & (shardCount - 1)
	for tb.total.Load() > max {
		var s *slot
		var hits uint64
		for round := 0; s == nil && round < 3; round++ {
			for i := uint64(0); s == nil && i < shardCount; i++ {
				s, hits = tb.shards[(start+i)&(shardCount-1)].evictOne(usable, round == 2)
			}
		}
		if s == nil {
			return
		}
		tb.total.Add(-1)
		gone(s, hits)
	}
}

// evictOne evicts one slot of sh chosen by second-chance sampling, or
// returns nil when none of the slots it looks at may go. With inUse, a slot
// hit since last looked at may go too.
func (sh *shard) evictOne(usable func(*credential.Token) bool, inUse bool) (*slot, uint64) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.n == 0 {
		return nil, 0
	}
	mask := uint32(len(sh.cells) - 1)
	start := rand.Uint32() // a random point, so the same few cells are not looked at every time
	victim, fallback := -1, -1
	for k, seen := uint32(0), 0; k <= mask && seen < evictSample; k++ {
		i := (start + k) & mask
		c := &sh.cells[i]
		s := c.owner
		if c.tag == 0 {
			continue
		}
		seen++
		if s.pins.Load() != 0 || s.flags.Load() != 0 { // pinned, refreshing or leased
			continue
		}
		if tok := c.cur; tok == nil || !usable(tok) {
			victim = int(i)
			break
		}
		if h := uint32(c.hits.Load()); h != s.seen {
			s.seen = h // hit since last looked at: a second chance
			if fallback < 0 {
				fallback = int(i)
			}
			continue
		}
		victim = int(i)
		break
	}
	if victim < 0 && inUse {
		victim = fallback
	}
	if victim < 0 || !sh.cells[victim].owner.pins.CompareAndSwap(0, -1) {
		return nil, 0 // (a CAS lost to a pin: a mint just started; the caller tries elsewhere)
	}
	s, hits := sh.cells[victim].owner, sh.cells[victim].hits.Load()
	sh.delete(uint32(victim))
	return s, hits
}

// find returns the index of id's cell, or -1; sh.mu held.
func (sh *shard) find(tag uint32, id string) int {
	cells := sh.cells
	if len(cells) == 0 {
		return -1
	}
	mask := uint32(len(cells) - 1)
	for i := home(tag, mask); ; i = (i + 1) & mask {
		c := &cells[i]
		// A caller's ID is usually the very string the slot keeps: the
		// compare then sees equal pointers and reads no bytes.
		if c.tag == tag && c.n == uint32(len(id)) && unsafe.String(c.p, c.n) == id {
			return int(i)
		}
		if c.tag == 0 { // (there is always an empty cell: see maxLoad)
			return -1
		}
	}
}

// home is where a lookup for tag starts: the first cell of an aligned run
// of four (256 bytes), so the cells a probe goes on to are the ones the CPU
// fetches with, or just after, the first. Measured against starting at any
// cell, 100k keys spread: ratio to 1k 1.67–2.05 (median ~1.8) against
// 1.79–2.26 (~2.05), ten paired runs; runs of two cells (a 128-byte pair)
// fell in between. The ring of homes is four times coarser, so runs are
// longer: at 100k keys a hit looks at ~3.4 cells instead of ~2.6, an absent
// key at ~11 instead of ~9, but mostly on lines already on their way. (Any
// function of the tag works with delete's backward shift.)
func home(tag, mask uint32) uint32 { return tag & mask &^ 3 }

// insert puts s, absent, in its first free cell from tag's home; sh.mu
// write-held.
func (sh *shard) insert(tag uint32, s *slot) {
	if (sh.n+1)*8 > len(sh.cells)*maxLoad {
		sh.grow()
	}
	mask := uint32(len(sh.cells) - 1)
	i := home(tag, mask)
	for sh.cells[i].tag != 0 {
		i = (i + 1) & mask
	}
	c := &sh.cells[i]
	c.tag, c.n, c.p, c.owner = tag, uint32(len(s.id)), unsafe.StringData(s.id), s
	sh.n++
}

// grow doubles sh's array; sh.mu write-held.
func (sh *shard) grow() { sh.resize(max(minCells, 2*len(sh.cells))) }

// resize moves sh's cells to a new array of size cells; sh.mu write-held.
func (sh *shard) resize(size int) {
	cells := sh.cells
	sh.cells = make([]cell, size)
	mask := uint32(size - 1)
	for j := range cells {
		if cells[j].tag == 0 {
			continue
		}
		i := home(cells[j].tag, mask)
		for sh.cells[i].tag != 0 {
			i = (i + 1) & mask
		}
		sh.cells[i].take(&cells[j])
	}
}

// delete empties cell i, shifting back the cells after it that probed past
// it, so no lookup ever needs a tombstone; sh.mu write-held.
func (sh *shard) delete(i uint32) {
	cells := sh.cells
	mask := uint32(len(cells) - 1)
	for j := (i + 1) & mask; cells[j].tag != 0; j = (j + 1) & mask {
		// Cell j may move back to i only if i is not before its home.
		if (j-home(cells[j].tag, mask))&mask >= (j-i)&mask {
			cells[i].take(&cells[j])
			i = j
		}
	}
	cells[i].take(&cell{})
	sh.n--
	// Halve at 1/8 full (to 1/4; it doubles at 7/8), so a table that held
	// 100k keys and now holds a few does not keep 8 MB of empty cells: a
	// reload that drops credentials, or broker clients forgotten.
	if len(cells) > minCells && sh.n*8 < len(cells) {
		sh.resize(len(cells) / 2)
	}
}

// take makes c a copy of o; the shard's write lock is held, so no reader
// touches either.
func (c *cell) take(o *cell) {
	c.tag, c.n, c.p, c.cur, c.owner = o.tag, o.n, o.p, o.cur, o.owner
	c.exp, c.iss, c.kind = o.exp, o.iss, o.kind
	c.hits.Store(o.hits.Load())
}
