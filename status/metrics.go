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

// Collect implements prometheus.Collector. It reads the cache's and the
// broker's counters per label (O(labels)); it never builds the page.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	hits, saved := c.p.costAvoided()
	for l, v := range hits {
		ch <- prometheus.MustNewConstMetric(c.avoided, prometheus.CounterValue, float64(v), l)
		ch <- prometheus.MustNewConstMetric(c.saved, prometheus.CounterValue, saved[l], l)
	}
}
