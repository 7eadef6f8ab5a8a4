package credlabel

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestOneLimiterPerRegistry: families registered with one registry share
// one limiter, so the bound holds for the registry as a whole; unregistered
// families get their own.
func TestOneLimiterPerRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, b := For(reg), For(reg)
	if a != b {
		t.Fatal("two limiters for one registry")
	}
	if For(nil) == For(nil) {
		t.Fatal("unregistered families share a limiter")
	}
	if other := For(prometheus.NewRegistry()); other == a {
		t.Fatal("two registries share a limiter")
	}
}

// TestLabelBound: the first Limit names keep their label, later ones share
// Other, a name keeps its label once given, and the gauge says how many have one.
func TestLabelBound(t *testing.T) {
	reg := prometheus.NewRegistry()
	lim := For(reg)
	v := NewCounterVec(lim, prometheus.CounterOpts{Name: "c_total", Help: "h"}, []string{"credential", "result"})
	reg.MustRegister(v)
	for i := range Limit + 500 {
		v.WithLabelValues(fmt.Sprint("n", i), "ok").Inc()
	}
	if got := lim.Label("n0"); got != "n0" {
		t.Fatalf("n0 lost its label: %q", got)
	}
	if got := lim.Label(fmt.Sprint("n", Limit)); got != Other {
		t.Fatalf("name past the bound labelled %q, want %q", got, Other)
	}
	if n := testutil.CollectAndCount(v); n != Limit+1 {
		t.Fatalf("%d series, want %d + %q", n, Limit, Other)
	}
	if got := testutil.ToFloat64(v.WithLabelValues("n999999", "ok")); got != 500 {
		t.Fatalf("%q counts %v, want the 500 late names", Other, got)
	}
	if g := testutil.ToFloat64(lim); g != Limit {
		t.Fatalf("gauge %v, want %d", g, Limit)
	}
}
