package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/admin"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/filter"
	"github.com/tokenbroker/tokenbroker/status"
)

// sampleEvery is the status chart's interval.
const sampleEvery = 10 * time.Second

// statusPage is the admin listener's /status and /status.json and the cost
// metrics: what the cache holds, for the credentials and the broker in force.
type statusPage struct {
	reg       prometheus.Registerer
	decisions *filter.Metrics       // Checks counted where they are decided
	filter    func() *filter.Filter // the filter in force (committed before this): the credentials' cache keys
	tokens    *tokenCache
	broker    *brokerEndpoint
	budgets   *budgets
	admin     *admin.Server

	page         atomic.Pointer[status.Page] // nil until start
	stopSampling chan struct{}
	sampling     sync.WaitGroup
}

func (s *statusPage) start(cfg *config.Config) error {
	p := status.New(s.tokens.Tokens, s.broker.current(), s.budgets.meter, cfg.Credentials, s.filter())
	p.SetRoutes(cfg.Routes)
	p.SetDecisions(s.decisions)
	if err := s.reg.Register(status.NewCollector(p)); err != nil {
		return fmt.Errorf("status metrics: %w", err)
	}
	s.admin.Handle("GET /status", http.HandlerFunc(p.ServeHTML))
	s.admin.Handle("GET /status.json", http.HandlerFunc(p.ServeJSON))
	s.page.Store(p)
	p.Sample()
	every := sampleEvery
	// Tests fill the chart quickly; not a documented setting.
	if d, err := time.ParseDuration(os.Getenv("TOKENBROKER_STATUS_SAMPLE_EVERY")); err == nil && d > 0 {
		every = d
	}
	s.stopSampling = make(chan struct{})
	s.sampling.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.Sample()
			case <-s.stopSampling:
				return
			}
		}
	})
	return nil
}

func (s *statusPage) apply(cfg *config.Config) (change, error) {
	return change{commit: func() {
		p := s.page.Load()
		p.SetCredentials(cfg.Credentials, s.filter())
		p.SetRoutes(cfg.Routes)
		p.SetBroker(s.broker.current()) // committed before this
	}}, nil
}

func (s *statusPage) stop(context.Context) {
	close(s.stopSampling)
	s.sampling.Wait()
}

// countMint records a mint attempt on the chart.
func (s *statusPage) countMint() {
	if p := s.page.Load(); p != nil {
		p.CountMint()
	}
}
