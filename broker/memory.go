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
type memory struct {
	clients  *simplelru.LRU[clientID, *client]
	keys     *simplelru.LRU[string, *keyState]  // by cache key ID
	negative *simplelru.LRU[string, *rejection] // by negativeKey
}

func (b *Broker) newMemory() {
	// NewLRU fails only for a size below 1.
	b.mem.clients, _ = simplelru.NewLRU(maxClients, func(_ clientID, c *client) {
		// A client's keys go with it: their state points at it.
		for _, k := range append([]cache.Key(nil), c.keys...) {
			b.mem.keys.Remove(k.ID)
		}
	})
	b.mem.keys, _ = simplelru.NewLRU(maxKeys, func(id string, ks *keyState) {
		c := ks.client
		for i, k := range c.keys {
			if k.ID == id {
				c.keys = append(c.keys[:i], c.keys[i+1:]...)
				break
			}
		}
		// Without its state the key can neither be refreshed nor proven:
		// drop its token and the cache's bookkeeping too.
		b.tokens.Forget(cache.Key{ID: id})
	})
	b.mem.negative, _ = simplelru.NewLRU[string, *rejection](maxNegative, nil)
}

// clientID names a client: its id at one upstream. A struct rather than a
// joined string, so the key shares the id's bytes with the client.
type clientID struct {
	up *upstream
	id string
}

func clientKey(req *request) clientID { return clientID{req.up, req.clientID} }

func negativeKey(keyID, bind string) string { return keyID + "/" + bind }
