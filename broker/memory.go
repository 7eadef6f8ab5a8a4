package broker

import (
	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/tokenbroker/tokenbroker/cache"
)

// What the broker remembers, and how much of it.
//
// Nothing is remembered about a client until the IdP has accepted its
// secret, or a cached token bound to that secret proves it did: anyone can
// send a made-up client id, and only the IdP knows whether it is real. A
// refusal is remembered in the negative table alone. Every table is an LRU
// that evicts its least recently used entry instead of refusing a newcomer,
// so a flood can push idle entries out but never lock a legitimate client out.
const (
	// maxClients bounds the clients remembered (mint limit, counters, keys).
	// Only clients whose secret the IdP accepted get here; past the bound the
	// least recently used is forgotten, and its mint limit starts afresh.
	maxClients = 100000
	// maxKeys bounds the (client, parameters) combinations remembered, against
	// a client with a valid secret that keeps varying its scope. An evicted
	// key's token is dropped from the cache too.
	maxKeys = 4 * maxClients
	// maxNegative bounds the IdP refusals remembered to answer retries: a
	// flood of made-up client ids with wrong secrets lands here and nowhere else.
	maxNegative = 10000
	// maxStatusClients bounds the clients Clients lists for the status page.
	maxStatusClients = 1000
)

// memory is the broker's bounded bookkeeping; Broker.mu guards it.
//
// The client and key tables are the bulk of it (one entry each per client
// in the common case), so they are intrusive LRUs: the recency links and
// the key live in the client and keyState records themselves, and a table
// is an index of one pointer per slot plus two pointers, with no list node
// or map entry per record.
type memory struct {
	clients  lru[client, *client]               // by client id (see clientKey)
	keys     lru[keyState, *keyState]           // by cache key ID
	negative *simplelru.LRU[string, *rejection] // by negativeKey; small and bounded

	// What few keys have, kept here rather than in every keyState; an
	// entry goes with its key, so both are bounded by maxKeys.
	refused map[*keyState]*rejection // a known key's last IdP refusal; its bind is the secret refused
	seeding map[*keyState]int        // seedings in progress (forward): their cache "mint" is free
	// refusals are the answers a client got refused, by the IdP or its
	// limits, for the status page; most clients have none.
	refusals map[*client]*refusals
}

type refusals struct{ rejected, limited int64 }

// refused counts a refusal (limited: by the client's limits, else by the
// IdP) for c while c is remembered; its eviction takes the counts with it.
func (b *Broker) refused(c *client, limited bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if cur, _ := b.mem.clients.peek(c.id()); cur != c {
		return
	}
	r := b.mem.refusals[c]
	if r == nil {
		r = &refusals{}
		b.mem.refusals[c] = r
	}
	if limited {
		r.limited++
	} else {
		r.rejected++
	}
}

// seeding counts a seeding of ks's token starting (+1) or ending (-1).
func (b *Broker) seeding(ks *keyState, d int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n := b.mem.seeding[ks] + d; n > 0 {
		b.mem.seeding[ks] = n
	} else {
		delete(b.mem.seeding, ks)
	}
}

func (b *Broker) newMemory() {
	b.mem.refusals = make(map[*client]*refusals)
	b.mem.clients = newLRU(maxClients, (*client).id, func(c *client) {
		delete(b.mem.refusals, c)
		// A client's keys go with it: their state points at it.
		for ks := c.keys; ks != nil; {
			next := ks.sibling
			b.mem.keys.remove(ks.id)
			ks = next
		}
	})
	b.mem.refused, b.mem.seeding = make(map[*keyState]*rejection), make(map[*keyState]int)
	b.mem.keys = newLRU(maxKeys, func(ks *keyState) string { return ks.id }, func(ks *keyState) {
		ks.client.dropKey(ks)
		delete(b.mem.refused, ks) // a seeding in progress removes its own entry
		// Without its state the key can neither be refreshed nor proven:
		// drop its token and the cache's bookkeeping too.
		b.tokens.Forget(cache.Key{ID: ks.id})
	})
	// NewLRU fails only for a size below 1.
	b.mem.negative, _ = simplelru.NewLRU[string, *rejection](maxNegative, nil)
}

// clientKey names req's client in the clients table: its id alone. Within
// one Broker an id always goes to the same upstream (the first whose
// client_ids match it, see parse; a new configuration builds a new Broker),
// so the id names the client at its upstream too, and the table's key is
// the client's own copy of it.
func clientKey(req *request) string { return req.clientID }

func negativeKey(keyID, bind string) string { return keyID + "/" + bind }

// links are an entry's place in its LRU's recency list.
type links[E any] struct{ newer, older *E }

// linked is a pointer to an LRU entry that carries its own links.
type linked[E any] interface {
	*E
	lru() *links[E]
}

// lru is a least-recently-used table whose entries carry their links and
// their key: an index (index.go) to find them, and no per-entry list node
// or copy of the key.
type lru[E any, P linked[E]] struct {
	idx            index[E]
	newest, oldest P
	max            int
	keyOf          func(P) string
	evicted        func(P) // called after an entry left the table, by eviction or remove
}

func newLRU[E any, P linked[E]](max int, keyOf func(P) string, evicted func(P)) lru[E, P] {
	return lru[E, P]{idx: newIndex(func(e *E) string { return keyOf(e) }), max: max, keyOf: keyOf, evicted: evicted}
}

// get returns k's entry and marks it the most recently used.
func (l *lru[E, P]) get(k string) (P, bool) {
	e := P(l.idx.get(k))
	if e != nil {
		l.unlink(e)
		l.pushNewest(e)
	}
	return e, e != nil
}

// peek returns k's entry without touching its recency.
func (l *lru[E, P]) peek(k string) (P, bool) {
	e := P(l.idx.get(k))
	return e, e != nil
}

// add inserts e (whose key must be absent) as the most recently used,
// evicting the least recently used entries past the bound.
func (l *lru[E, P]) add(e P) {
	l.idx.insert(e)
	l.pushNewest(e)
	for l.idx.len() > l.max {
		l.remove(l.keyOf(l.oldest))
	}
}

// remove drops k's entry, if any, and tells evicted.
func (l *lru[E, P]) remove(k string) {
	e := P(l.idx.remove(k))
	if e == nil {
		return
	}
	l.unlink(e)
	if l.evicted != nil {
		l.evicted(e)
	}
}

func (l *lru[E, P]) len() int { return l.idx.len() }

// resize changes the bound, evicting what no longer fits.
func (l *lru[E, P]) resize(max int) {
	l.max = max
	for l.idx.len() > l.max {
		l.remove(l.keyOf(l.oldest))
	}
}

// values lists the entries, least recently used first.
func (l *lru[E, P]) values() []P {
	out := make([]P, 0, l.idx.len())
	for e := l.oldest; e != nil; e = e.lru().newer {
		out = append(out, e)
	}
	return out
}

func (l *lru[E, P]) pushNewest(e P) {
	ln := e.lru()
	ln.older, ln.newer = l.newest, nil
	if l.newest != nil {
		P(l.newest).lru().newer = e
	} else {
		l.oldest = e
	}
	l.newest = e
}

func (l *lru[E, P]) unlink(e P) {
	ln := e.lru()
	if ln.newer != nil {
		P(ln.newer).lru().older = ln.older
	} else {
		l.newest = ln.older
	}
	if ln.older != nil {
		P(ln.older).lru().newer = ln.newer
	} else {
		l.oldest = ln.newer
	}
	ln.newer, ln.older = nil, nil
}
