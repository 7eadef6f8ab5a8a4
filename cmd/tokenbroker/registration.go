package main

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/internal/credlabel"
)

// laterRegistry keeps the metrics a component builds while it prepares a
// configuration, so they reach /metrics only once that configuration is in
// force: a configuration that is refused registers nothing, and one that
// replaces another swaps its metrics for the old ones. The credential label
// limiter is the exception: families built here share final's limiter at
// once, so the label bound holds across every family of the process.
type laterRegistry struct {
	final      prometheus.Registerer
	collectors []prometheus.Collector
}

func newLaterRegistry(final prometheus.Registerer) *laterRegistry {
	return &laterRegistry{final: final}
}

func (l *laterRegistry) Register(c prometheus.Collector) error {
	if _, ok := c.(*credlabel.Limiter); ok && l.final != nil {
		return prometheus.AlreadyRegisteredError{ExistingCollector: credlabel.For(l.final), NewCollector: c}
	}
	l.collectors = append(l.collectors, c)
	return nil
}

func (l *laterRegistry) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := l.Register(c); err != nil {
			panic(err)
		}
	}
}

func (l *laterRegistry) Unregister(c prometheus.Collector) bool {
	for i, have := range l.collectors {
		if have == c {
			l.collectors = append(l.collectors[:i], l.collectors[i+1:]...)
			return true
		}
	}
	return false
}

// swapInto registers l's metrics with reg in place of old's; either may be
// nil (nothing to register, nothing to replace).
func (l *laterRegistry) swapInto(reg prometheus.Registerer, old *laterRegistry) error {
	if old != nil {
		for _, c := range old.collectors {
			reg.Unregister(c)
		}
	}
	if l == nil {
		return nil
	}
	var errs []error
	for _, c := range l.collectors {
		errs = append(errs, reg.Register(c))
	}
	return errors.Join(errs...)
}
