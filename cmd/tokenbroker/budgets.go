package main

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/budget"
	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
)

// budgets are the credentials' mint budgets and prices (budget,
// cost_per_mint), counted through the fleet tier so a fleet shares them.
// Broker clients get theirs from their upstream when the broker first sees
// them (broker.*.budget). A new configuration applies to the next mint.
type budgets struct {
	meter *budget.Meter
}

func newBudgets(counts budget.Counter, log *zap.Logger, reg prometheus.Registerer) *budgets {
	return &budgets{meter: budget.NewMeter(counts, nil, log, reg)}
}

func (b *budgets) start(cfg *config.Config) error { return now(b.apply(cfg)) }

func (b *budgets) apply(cfg *config.Config) (change, error) {
	return change{commit: func() {
		for name, c := range cfg.Credentials {
			b.meter.Set(name, budget.Policy{Limit: c.Budget.Mints, Window: c.Budget.Per.D(), Enforce: c.Budget.Enforce, CostPerMint: c.CostPerMint})
		}
	}}, nil
}

func (b *budgets) stop(context.Context) {}

// mayMint is the gate every mint passes (cache.Options.MayMint): a broker
// key asks the broker (its client's mint limit, then its budget), a
// credential its budget. A mint let through counts on the status chart.
func (a *assembly) mayMint(k cache.Key) error {
	var err error
	switch {
	case !broker.Owns(k):
		err = a.budgets.meter.Take(k.Name)
	default:
		if b := a.broker.current(); b != nil {
			err = b.MayMint(k)
		} else {
			err = errors.New("broker is off")
		}
	}
	if err == nil {
		a.status.countMint()
	}
	return err
}
