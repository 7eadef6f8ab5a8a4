package status

import "github.com/prometheus/client_golang/prometheus"

// Collector exports the cost meter: mints avoided and dollars avoided, per
// credential or broker upstream (never per client id).
type Collector struct {
	p              *Page
	avoided, saved *prometheus.Desc
}

// NewCollector reads p at scrape time.
func NewCollector(p *Page) *Collector {
	return &Collector{p: p,
		avoided: prometheus.NewDesc("tokenbroker_mints_avoided_total",
			"Requests answered from cache instead of minting, by credential or broker upstream.", []string{"credential"}, nil),
		saved: prometheus.NewDesc("tokenbroker_cost_avoided_dollars_total",
			"Estimated dollars not spent thanks to the cache (mints avoided × cost_per_mint).", []string{"credential"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) { ch <- c.avoided; ch <- c.saved }

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	hits, saved := map[string]float64{}, map[string]float64{}
	for _, r := range c.p.Data().Rows {
		if r.Kind == "broker_client" {
			continue // the page lists some clients; the broker's totals count all
		}
		label := c.p.tokens.CredentialLabel(r.Name) // the cache's label bound
		hits[label] += float64(r.Hits)
		saved[label] += r.DollarsSaved
	}
	if b := c.p.broker.Load(); b != nil {
		for _, u := range b.Totals() {
			label := c.p.tokens.CredentialLabel("broker:" + u.Upstream)
			hits[label] += float64(u.Cached)
			saved[label] += float64(u.Cached) * u.CostPerMint
		}
	}
	for l, v := range hits {
		ch <- prometheus.MustNewConstMetric(c.avoided, prometheus.CounterValue, v, l)
		ch <- prometheus.MustNewConstMetric(c.saved, prometheus.CounterValue, saved[l], l)
	}
}
