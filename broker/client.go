package broker

import (
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenbroker/tokenbroker/cache"
)

// client is one client id at one upstream. There is one per client the
// IdP accepted (up to maxClients), so it is kept small (96 bytes): one
// string holds both the meter name and the id, times are Unix nanoseconds,
// the keys and recency links live in the records themselves, and the
// refusals most clients never get are counted beside the table
// (memory.refusals).
type client struct {
	// name is the client's name in the budget meter (never a metric label),
	// "client:<upstream>/<id>"; the id is its tail, so both share one
	// allocation, and the meter's own tables share it too.
	name   string
	bucket *bucket // the upstream's shared one when it sets no limit; knows the upstream

	requests, cached, mints, forwarded atomic.Int64

	// guarded by Broker.mu
	lastMint    int64 // Unix nanoseconds of the last mint; 0: none yet
	lastLatency time.Duration
	keys        *keyState // the client's keys, linked through keyState.sibling
	links       links[client]
}

const meterPrefix = "client:"

func newClient(id string, up *upstream, now time.Time) *client {
	// The concatenation copies id: a client must not keep the request's
	// form body (id is a substring of it) alive.
	return &client{name: meterPrefix + up.Name + "/" + id, bucket: up.newBucket(now)}
}

// up is the client's upstream, kept in its bucket: one pointer less per client.
func (c *client) up() *upstream { return c.bucket.up }

// id is the client id, the tail of name.
func (c *client) id() string { return c.name[len(meterPrefix)+len(c.up().Name)+1:] }

// meterName is the client's name in the budget meter.
func (c *client) meterName() string { return c.name }

func (c *client) lru() *links[client] { return &c.links }

// addKey and dropKey keep the client's key list; Broker.mu is held.
func (c *client) addKey(ks *keyState) { ks.sibling, c.keys = c.keys, ks }

func (c *client) dropKey(ks *keyState) {
	for p := &c.keys; *p != nil; p = &(*p).sibling {
		if *p == ks {
			*p = ks.sibling
			ks.sibling = nil
			return
		}
	}
}

// keyList copies the client's keys, most recently added first; Broker.mu is held.
func (c *client) keyList() []cache.Key {
	var out []cache.Key
	for ks := c.keys; ks != nil; ks = ks.sibling {
		out = append(out, cache.Key{ID: ks.id, Name: c.up().keyName})
	}
	return out
}

// bucket is a token bucket: capacity mints, refilled evenly over per.
type bucket struct {
	up     *upstream
	mu     sync.Mutex // guards tokens and last
	cap    float64
	perSec float64
	tokens float64
	last   time.Time
}

// newBucket is a new client's bucket. Without a limit it is the upstream's
// unlimited one: it never changes, so one is enough for 100,000 clients.
func (u *upstream) newBucket(now time.Time) *bucket {
	mints, per := u.Limit.Mints, u.Limit.Per.D()
	if mints <= 0 || per <= 0 {
		return u.unlimited
	}
	return &bucket{up: u, cap: float64(mints), perSec: float64(mints) / per.Seconds(), tokens: float64(mints), last: now}
}

// take spends one token, or says how long until one is there.
func (b *bucket) take(now time.Time) (time.Duration, bool) { return b.use(now, true) }

// peek says whether take would succeed, spending nothing.
func (b *bucket) peek(now time.Time) (time.Duration, bool) { return b.use(now, false) }

func (b *bucket) use(now time.Time, spend bool) (time.Duration, bool) {
	if b.cap == 0 {
		return 0, true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = math.Min(b.cap, b.tokens+el*b.perSec)
		b.last = now
	}
	if b.tokens >= 1 {
		if spend {
			b.tokens--
		}
		return 0, true
	}
	return time.Duration((1 - b.tokens) / b.perSec * float64(time.Second)), false
}

// ClientState is what the status page shows of one broker client. It holds
// no secret and no token.
type ClientState struct {
	ClientID, Upstream string
	MeterName          string // name in the budget meter
	CostPerMint        float64
	Requests, Cached   int64 // Cached: answered from cache = mints avoided
	Mints, Forwarded   int64
	Rejected, Limited  int64
	LastMint           time.Time
	LastLatency        time.Duration
	Keys               []cache.Key
}

// Clients returns the clients holding a valid token, most recently used
// first, at most maxStatusClients of them, sorted by upstream then client id.
// Clients the IdP never accepted are not known, so never listed.
func (b *Broker) Clients() []ClientState {
	b.mu.Lock()
	all := b.mem.clients.values() // oldest first
	b.mu.Unlock()
	out := make([]ClientState, 0, min(len(all), maxStatusClients))
	for i := len(all) - 1; i >= 0 && len(out) < maxStatusClients; i-- {
		c := all[i]
		b.mu.Lock()
		keys := c.keyList()
		var lastMint time.Time
		if c.lastMint != 0 {
			lastMint = time.Unix(0, c.lastMint)
		}
		lastLatency := c.lastLatency
		var rf refusals
		if r := b.mem.refusals[c]; r != nil {
			rf = *r
		}
		b.mu.Unlock()
		if !slices.ContainsFunc(keys, func(k cache.Key) bool { _, ok := b.tokens.Peek(k); return ok }) {
			continue
		}
		out = append(out, ClientState{
			ClientID: c.id(), Upstream: c.up().Name, MeterName: c.meterName(), CostPerMint: c.up().CostPerMint,
			Requests: c.requests.Load(), Cached: c.cached.Load(), Mints: c.mints.Load(), Forwarded: c.forwarded.Load(),
			Rejected: rf.rejected, Limited: rf.limited,
			LastMint: lastMint, LastLatency: lastLatency, Keys: keys,
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Upstream != out[j].Upstream {
			return out[i].Upstream < out[j].Upstream
		}
		return out[i].ClientID < out[j].ClientID
	})
	return out
}
