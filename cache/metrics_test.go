package cache

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestCredentialSeriesBounded: past CredentialSeriesLimit credentials share
// one label value, so metric memory and cardinality stay bounded, and the
// expiry gauge stays free of duplicate series.
func TestCredentialSeriesBounded(t *testing.T) {
	c := newClock()
	reg := prometheus.NewRegistry()
	tk, err := New(Options{Now: c.Now, Meter: NewMetrics(reg)})
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	src := &source{clock: c, lifetime: time.Hour}
	const n = CredentialSeriesLimit + 50
	for i := range n {
		if _, err := tk.Get(context.Background(), Key{ID: fmt.Sprint("id-", i), Name: fmt.Sprint("c", i)}, src); err != nil {
			t.Fatal(err)
		}
	}
	tk.Settle()
	mfs, err := reg.Gather() // fails on duplicate series
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		labels := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "credential" {
					labels[lp.GetValue()] = true
				}
			}
		}
		if mf.GetName() == "tokenbroker_metric_credentials" {
			continue // the limiter's own gauge
		}
		if len(labels) != CredentialSeriesLimit+1 || !labels[OtherCredentials] {
			t.Errorf("%s: %d credential label values (want %d + %q)", mf.GetName(), len(labels), CredentialSeriesLimit, OtherCredentials)
		}
	}
}
