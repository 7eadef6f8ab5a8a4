package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/admin"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/budget"
	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/tlsreload"
	"github.com/tokenbroker/tokenbroker/status"
	"github.com/tokenbroker/tokenbroker/telemetry"
)

// sampleEvery is the status chart's interval.
const sampleEvery = 10 * time.Second

// extras are the token-endpoint broker, mint budgets and the status page,
// kept apart from serve.go's core wiring.
type extras struct {
	cfg    *config.Config
	log    *zap.Logger
	reg    prometheus.Registerer
	meter  *budget.Meter
	broker *broker.Broker
	page   *status.Page
	http   *http.Server
	addr   net.Addr

	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

func newExtras(cfg *config.Config, l2 *cache.Redis, log *zap.Logger, reg prometheus.Registerer) *extras {
	x := &extras{cfg: cfg, log: log, reg: reg, stop: make(chan struct{})}
	var counter budget.Counter // nil: in memory
	if l2 != nil {
		// With Redis the fleet shares its budgets; memory keeps counting
		// while Redis is away.
		keep := budget.Keep
		for _, c := range cfg.Credentials {
			keep = max(keep, c.Budget.Per.D())
		}
		for _, u := range cfg.Broker.Upstreams {
			keep = max(keep, u.Budget.Per.D())
		}
		counter = budget.Tiered{Shared: l2.MintCounter(keep), Local: budget.NewMemory()}
	}
	x.meter = budget.NewMeter(counter, nil, log, reg)
	x.setPolicies(cfg)
	return x
}

// setPolicies gives every credential its budget and price.
func (x *extras) setPolicies(cfg *config.Config) {
	for name, c := range cfg.Credentials {
		x.meter.Set(name, budget.Policy{Limit: c.Budget.Mints, Window: c.Budget.Per.D(), Enforce: c.Budget.Enforce, CostPerMint: c.CostPerMint})
	}
}

// reconfigure applies a reloaded configuration's credentials to budgets and
// the status page; the broker and listeners keep their start-up settings.
func (x *extras) reconfigure(cfg *config.Config) {
	x.setPolicies(cfg)
	if x.page != nil {
		x.page.SetCredentials(cfg.Credentials)
		x.page.SetRoutes(cfg.Routes)
	}
}

// mayMint is the cache's gate: broker keys ask the broker (client limits and
// budgets), credentials their budget.
func (x *extras) mayMint(k cache.Key) error {
	var err error
	switch {
	case !broker.Owns(k):
		err = x.meter.Take(k.Name)
	case x.broker == nil:
		err = errors.New("broker is off")
	default:
		err = x.broker.MayMint(k)
	}
	if err == nil && x.page != nil {
		x.page.CountMint()
	}
	return err
}

// build creates the broker (when listen.broker is set) and the status page,
// and adds the admin endpoints.
func (x *extras) build(s *server, listen func(what, addr string) (net.Listener, error)) error {
	if x.cfg.Listen.Broker != "" {
		b, err := broker.New(broker.Options{Config: x.cfg.Broker, Tokens: s.tokens, Meter: x.meter, Logger: x.log, Registerer: x.reg,
			HMACKey: []byte(x.cfg.Broker.BindingKey.Reveal())})
		if err != nil {
			return err
		}
		ln, err := listen("broker", x.cfg.Listen.Broker)
		if err != nil {
			return err
		}
		if x.cfg.Listen.TLS.Enabled() {
			// listen.tls covers every listener that hands out tokens.
			if ln, err = tlsreload.NewListener(ln, x.cfg.Listen.TLS); err != nil {
				return fmt.Errorf("listen.tls: %w", err)
			}
		}
		x.broker, x.addr = b, ln.Addr()
		mux := http.NewServeMux()
		mux.Handle(x.cfg.Broker.Path, telemetry.WrapHandler("broker token request", x.cfg.Broker.Path, b))
		x.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 15 * time.Second, IdleTimeout: 2 * time.Minute}
		go func() {
			if err := x.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				x.log.Error("broker server stopped", zap.Error(err))
			}
		}()
	}
	x.page = status.New(s.tokens, x.broker, x.meter, x.cfg.Credentials)
	x.page.SetRoutes(x.cfg.Routes)
	x.page.SetDecisions(s.filterMetrics) // Checks counted where they are decided
	if err := x.reg.Register(status.NewCollector(x.page)); err != nil {
		return fmt.Errorf("status metrics: %w", err)
	}
	token := x.cfg.Admin.Token.Reveal()
	s.admin.Handle("GET /status", http.HandlerFunc(x.page.ServeHTML))
	s.admin.Handle("GET /status.json", http.HandlerFunc(x.page.ServeJSON))
	s.admin.Handle("POST /admin/credentials/{name}/invalidate", admin.Invalidate(token, func(name string) (int, bool) {
		if _, ok := x.cfg.Credentials[name]; !ok {
			return 0, false
		}
		n := 0
		for _, st := range s.tokens.Snapshot() {
			if st.Key.Name == name {
				s.tokens.Invalidate(st.Key)
				n++
			}
		}
		x.log.Info("credential invalidated", zap.String("credential", name), zap.Int("tokens", n))
		return n, true
	}))
	return nil
}

// serve starts the chart's sampler.
func (x *extras) serve() {
	x.page.Sample()
	x.wg.Go(func() {
		every := sampleEvery
		// Tests fill the chart quickly; not a documented setting.
		if d, err := time.ParseDuration(os.Getenv("TOKENBROKER_STATUS_SAMPLE_EVERY")); err == nil && d > 0 {
			every = d
		}
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				x.page.Sample()
			case <-x.stop:
				return
			}
		}
	})
}

func (x *extras) shutdown(drain time.Duration) {
	if x.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), drain)
		_ = x.http.Shutdown(ctx)
		cancel()
	}
}

func (x *extras) close() {
	x.once.Do(func() { close(x.stop) })
	x.wg.Wait()
	if x.http != nil {
		_ = x.http.Close()
	}
}
