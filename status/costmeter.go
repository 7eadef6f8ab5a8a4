package status

import (
	"slices"
	"sort"
	"strings"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
)

// credentials are the configured credentials as the page reads them,
// prepared once per configuration (not per view or scrape) and kept small:
// 100,000 credentials must not keep their parsed configuration alive for
// the page. It holds the sorted names for paging and the prices; the cache
// keys it asks of the filter in force.
type credentials struct {
	names []string // sorted: the page's row order
	keys  Keys
	// cost is cost_per_mint by name, only for credentials with a price
	// that differs from otherCost; nil when they all share one.
	cost map[string]float64
	// otherCost prices the hits the cache counts under OtherCredentials,
	// where per-credential counts are not kept: the cost_per_mint they all
	// share, or else the mean over every credential (an estimate).
	otherCost float64
	uniform   bool       // every credential's price is otherCost
	routes    routeTexts // each credential's routes, aligned with names (SetRoutes)
}

// Keys finds a configured credential's cache key: the filter in force
// (*filter.Filter) does.
type Keys interface {
	Key(name string) (cache.Key, bool)
}

// identities are the keys of credentials computed from their configuration,
// for a page built without the filter (tests).
type identities map[string]cache.Key

func (m identities) Key(name string) (cache.Key, bool) { k, ok := m[name]; return k, ok }

func newCredentials(byName map[string]*config.Credential, keys Keys) *credentials {
	c := &credentials{names: make([]string, 0, len(byName)), keys: keys, uniform: true}
	var own identities
	if keys == nil {
		own = make(identities, len(byName))
		c.keys = own
	}
	var sum float64
	first := true
	for name, cr := range byName {
		c.names = append(c.names, name)
		if own != nil {
			own[name] = cache.Key{ID: cr.Identity(), Name: name}
		}
		sum += cr.CostPerMint
		if first {
			c.otherCost, first = cr.CostPerMint, false
		} else if cr.CostPerMint != c.otherCost {
			c.uniform = false
		}
	}
	if !c.uniform {
		c.otherCost = sum / float64(len(byName))
		c.cost = make(map[string]float64)
		for name, cr := range byName {
			if cr.CostPerMint != c.otherCost {
				c.cost[name] = cr.CostPerMint
			}
		}
	}
	sort.Strings(c.names)
	return c
}

// has reports whether name is a configured credential.
func (c *credentials) has(name string) bool {
	_, ok := slices.BinarySearch(c.names, name)
	return ok
}

// costPerMint is the price of one of name's mints.
func (c *credentials) costPerMint(name string) float64 {
	if p, ok := c.cost[name]; ok {
		return p
	}
	return c.otherCost
}

// key is the cache key of the i-th credential; ok is false when the filter
// in force does not know it (a reload between the two swaps).
func (c *credentials) key(i int) (cache.Key, bool) { return c.keys.Key(c.names[i]) }

// costAvoided is, per credential label, the requests answered from cache
// and the dollars that saved: credentials from the cache's own hit counters,
// broker upstreams from the broker's totals. It costs O(labels), bounded by
// the credential series limit, whatever the number of credentials and
// clients: scrapes call it.
func (p *Page) costAvoided() (hits map[string]uint64, saved map[string]float64) {
	cs := p.creds.Load()
	hits, saved = map[string]uint64{}, map[string]float64{}
	var totals []broker.UpstreamTotal
	var brokerOther uint64 // broker hits the cache counted under OtherCredentials
	if b := p.broker.Load(); b != nil {
		totals = b.Totals()
		for _, u := range totals {
			if p.tokens.CredentialLabel(broker.NamePrefix+u.Upstream) == cache.OtherCredentials {
				brokerOther += uint64(max(0, u.Cached))
			}
		}
	}
	for l, h := range p.tokens.LabelHits() {
		switch {
		case l == cache.OtherCredentials:
			h -= min(h, brokerOther) // counted below, from the broker's totals
			hits[l] += h
			saved[l] += float64(h) * cs.otherCost
		case strings.HasPrefix(l, broker.NamePrefix):
			// The broker's keys: its totals below count every client.
		default:
			if !cs.has(l) {
				continue // a credential a reload removed
			}
			hits[l] += h
			saved[l] += float64(h) * cs.costPerMint(l)
		}
	}
	for _, u := range totals {
		l := p.tokens.CredentialLabel(broker.NamePrefix + u.Upstream)
		hits[l] += uint64(max(0, u.Cached))
		saved[l] += float64(u.Cached) * u.CostPerMint
	}
	return hits, saved
}
