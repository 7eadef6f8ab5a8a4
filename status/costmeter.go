package status

import (
	"sort"
	"strings"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
)

// credentials are the configured credentials as the page reads them,
// prepared once per configuration (not per view or scrape): sorted names for
// paging, and the price assumed for credentials past the metric series limit.
type credentials struct {
	byName map[string]*config.Credential
	names  []string // sorted: the page's row order
	// otherCost prices the hits the cache counts under OtherCredentials,
	// where per-credential counts are not kept: the cost_per_mint they all
	// share, or else the mean over every credential (an estimate).
	otherCost float64
}

func newCredentials(byName map[string]*config.Credential) *credentials {
	c := &credentials{byName: byName, names: make([]string, 0, len(byName))}
	var sum float64
	uniform, first := true, true
	for name, cr := range byName {
		c.names = append(c.names, name)
		sum += cr.CostPerMint
		if first {
			c.otherCost, first = cr.CostPerMint, false
		} else if cr.CostPerMint != c.otherCost {
			uniform = false
		}
	}
	if !uniform {
		c.otherCost = sum / float64(len(byName))
	}
	sort.Strings(c.names)
	return c
}

// identity is the cache key ID of the i-th credential.
func (c *credentials) identity(i int) string { return c.byName[c.names[i]].Identity() }

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
			cr, ok := cs.byName[l]
			if !ok {
				continue // a credential a reload removed
			}
			hits[l] += h
			saved[l] += float64(h) * cr.CostPerMint
		}
	}
	for _, u := range totals {
		l := p.tokens.CredentialLabel(broker.NamePrefix + u.Upstream)
		hits[l] += uint64(max(0, u.Cached))
		saved[l] += float64(u.Cached) * u.CostPerMint
	}
	return hits, saved
}
