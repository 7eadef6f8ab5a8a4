package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"google.golang.org/grpc"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/admin"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/filter"
	"github.com/tokenbroker/tokenbroker/sds"
)

// An assembly is one running tokenbroker. The configuration becomes the
// components below, each with one way to start, to take a new configuration
// and to stop. They start in this order, each using only those above it:
//
//	fleet        cache.redis               the Redis tier replicas share tokens and mint counts through
//	budgets      budget, cost_per_mint     mint counts, budgets and the cost meter
//	tokens       cache.*                   the token cache: L1, single-flight, refresh-ahead
//	broker       broker.*                  the token endpoint's upstreams, limits and pass-through parameters
//	decisions    credentials, routes, default_action   the filter every Check and forward-auth request asks
//	status       —                         the /status page and its chart
//	admin        listen.admin, admin.*     /healthz /readyz /metrics /status and the admin API
//	grpc         listen.grpc, listen.tls   ext_authz v3, gRPC health, reflection and added services (SDS)
//	forwardAuth  listen.http, forward_auth.*, listen.tls
//	brokerHTTP   listen.broker, listen.tls the broker's HTTP listener
//
// and stop in the reverse order, except that the three listeners that hand
// out tokens stop together, so one shutdown.drain bounds them all.
//
// A new configuration is applied in two steps: every component first
// prepares it (apply) without changing what serves — binding new addresses,
// building clients, token sources and the filter; if any refuses, nothing
// changes. Then every change commits, in order, and finally retires what the
// old configuration held (old listeners drain, an old Redis client closes).
type assembly struct {
	log *zap.Logger
	reg *prometheus.Registry

	tracer      *tracer // tracing: and OTEL_*, first to start and last to stop
	push        *pushMode
	fleet       *fleetTier
	budgets     *budgets
	tokens      *tokenCache
	broker      *brokerEndpoint
	decisions   *decisions
	status      *statusPage
	admin       *adminListener
	grpc        *grpcListener
	forwardAuth *forwardAuthListener
	brokerHTTP  *brokerListener

	core    []component // fleet … admin, in start order
	serving []component // grpc, forwardAuth, brokerHTTP

	cfg atomic.Pointer[inForce] // the configuration in force, as kept between reloads

	reloadMu sync.Mutex // serialises reloads
	reloads  *reloadMetrics
	// beforeRetire, when set (tests), runs after a reload committed and
	// before the old configuration's listeners close.
	beforeRetire func()
}

// component is one part of a running tokenbroker.
type component interface {
	// start puts cfg in force on a component that is not running yet.
	start(cfg *config.Config) error
	// apply prepares cfg without changing what serves; the change it
	// returns puts it in force. An error leaves the component as it was.
	apply(cfg *config.Config) (change, error)
	// stop ends what the component runs; ctx bounds the requests in flight.
	stop(ctx context.Context)
}

// change is a prepared configuration of one component. Nil steps do nothing.
type change struct {
	commit  func() // puts it in force; cannot fail
	retire  func() // after every component committed: let go of what the old configuration held
	discard func() // instead of commit, when another component refused: let go of what apply built
	// restart lists the settings of the new file that only a restart can
	// apply; apply then wrote the running values into the configuration.
	restart []string
}

func (c change) run(step func()) {
	if step != nil {
		step()
	}
}

// then is c followed by d: committed, retired and discarded together.
func (c change) then(d change) change {
	both := func(a, b func()) func() {
		return func() { c.run(a); c.run(b) }
	}
	return change{commit: both(c.commit, d.commit), retire: both(c.retire, d.retire),
		discard: both(c.discard, d.discard), restart: append(c.restart, d.restart...)}
}

// now commits a change at once: how most components start.
func now(c change, err error) error {
	if err != nil {
		return err
	}
	c.run(c.commit)
	c.run(c.retire)
	return nil
}

// newAssembly makes the components, none of them running yet.
func newAssembly(log *zap.Logger) *assembly {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfoGauge())
	a := &assembly{log: log, reg: reg, reloads: newReloadMetrics(reg)}
	processKey := make([]byte, 32) // the broker's binding key without broker.binding_key_file
	_, _ = rand.Read(processKey)

	a.tracer = &tracer{log: log}
	a.fleet = newFleetTier(log, reg)
	a.budgets = newBudgets(a.fleet, log, reg)
	a.tokens = &tokenCache{log: log, reg: reg, fleet: a.fleet, mayMint: a.mayMint}
	a.broker = &brokerEndpoint{log: log, reg: reg, tokens: a.tokens, budgets: a.budgets, processKey: processKey}
	a.decisions = &decisions{log: log, tokens: a.tokens, metrics: filter.NewMetrics(reg)}
	adminHandler := admin.New(reg)
	a.status = &statusPage{reg: reg, decisions: a.decisions.metrics, filter: func() *filter.Filter { return a.decisions.filter }, tokens: a.tokens, broker: a.broker, budgets: a.budgets, admin: adminHandler}
	a.push = &pushMode{log: log, reg: reg, tokens: a.tokens, decisions: a.decisions, status: a.status}
	a.admin = newAdminListener(adminHandler, a, log)
	a.grpc = newGRPCListener(&a.decisions.current, log)
	a.grpc.services = append(a.grpc.services, func(g *grpc.Server) { a.push.register(g, a.grpc.health) })
	a.grpc.draining = append(a.grpc.draining, a.push.retire)
	a.grpc.options = append(a.grpc.options, sds.ServerOptions()...) // stream and keepalive bounds for SDS's long-lived streams
	a.forwardAuth = newForwardAuthListener(&a.decisions.current, log)
	a.brokerHTTP = newBrokerListener(a.broker, log)

	a.core = []component{a.tracer, a.fleet, a.budgets, a.tokens, a.broker, a.decisions, a.status, a.push, a.admin}
	a.serving = []component{a.grpc, a.forwardAuth, a.brokerHTTP}
	return a
}

func (a *assembly) components() []component {
	return append(append([]component(nil), a.core...), a.serving...)
}

// config is the configuration in force, without its credentials and
// routes (inForce says why).
func (a *assembly) config() *config.Config { return a.cfg.Load().cfg }

// inForce is the configuration in force as the assembly keeps it once every
// component has been built from it: every section but `credentials:` and
// `routes:`, and digests of those two. After the load they live on in the
// form their users need — the token sources, the filter's bindings and
// route table, the budget meter's policies, the status page's names, prices
// and route texts — so the parsed config.Credential and config.Route of each
// (about 0.9 KB with their strings and map entry, 90 MB for 100,000) are
// not kept as well. The next reload compares digests to tell whether either
// changed.
type inForce struct {
	cfg *config.Config // Credentials and Routes nil
	digests
}

// digests stand in for the credentials and routes of a configuration.
type digests struct{ credentials, routes config.Digest }

func digestsOf(cfg *config.Config) digests {
	return digests{credentials: cfg.CredentialsDigest(), routes: cfg.RoutesDigest()}
}

// keep is cfg, whose digests are d, as the assembly keeps it in force.
func keep(cfg *config.Config, d digests) *inForce {
	return &inForce{cfg: withoutLists(cfg), digests: d}
}

func withoutLists(cfg *config.Config) *config.Config {
	c := *cfg
	c.Credentials, c.Routes = nil, nil
	return &c
}

// same reports whether cfg (with digests d) says what f does.
func (f *inForce) same(cfg *config.Config, d digests) bool {
	return d == f.digests && reflect.DeepEqual(f.cfg, withoutLists(cfg))
}

// start builds everything cfg describes and starts listening. On error
// nothing is left running.
func start(cfg *config.Config, log *zap.Logger) (*assembly, error) {
	a := newAssembly(log)
	all := a.components()
	for i, c := range all {
		if err := c.start(cfg); err != nil {
			ctx, cancel := context.WithTimeout(context.Background(), cfg.Shutdown.Drain.D())
			defer cancel()
			for j := i - 1; j >= 0; j-- {
				all[j].stop(ctx)
			}
			return nil, err
		}
	}
	a.cfg.Store(keep(cfg, digestsOf(cfg)))
	credentials, routes, action := len(cfg.Credentials), len(cfg.Routes), cfg.DefaultAction
	// Nothing else holds the parsed credentials and routes now (inForce):
	// drop the last reference, so the collection below frees them and
	// returns their pages rather than leaving them resident as garbage.
	cfg = nil
	releaseLoadMemory() // before ready: the forced collection is not paid by the first requests
	a.admin.handler.SetReady(true)
	log.Info("serving",
		zap.String("version", buildVersion()),
		zap.Stringer("grpc", addrOrOff(a.grpc.addr())),
		zap.Stringer("admin", addrOrOff(a.admin.addr())),
		zap.Stringer("http", addrOrOff(a.forwardAuth.addr())),
		zap.Stringer("broker", addrOrOff(a.brokerHTTP.addr())),
		zap.Int("credentials", credentials),
		zap.Int("routes", routes),
		zap.String("default_action", action))
	return a, nil
}

// apply puts cfg, whose digests are d, in force: every
// component prepares it, then (when all could) every change commits and
// retires in order. It returns the settings only a restart can apply; cfg
// then holds their running values.
func (a *assembly) apply(cfg *config.Config, d digests) (restart []string, err error) {
	var changes []change
	for _, c := range a.components() {
		ch, err := c.apply(cfg)
		if err != nil {
			for _, p := range changes {
				p.run(p.discard)
			}
			return nil, err
		}
		changes = append(changes, ch)
		restart = append(restart, ch.restart...)
	}
	for _, ch := range changes {
		ch.run(ch.commit)
	}
	a.cfg.Store(keep(cfg, d))
	if a.beforeRetire != nil {
		a.beforeRetire()
	}
	for _, ch := range changes {
		ch.run(ch.retire)
	}
	return restart, nil
}

// stop stops taking traffic in the order load balancers and Envoy's health
// checks need: readiness and gRPC health turn NOT_SERVING first, then after
// shutdown.delay the token listeners close while requests in flight finish
// (at most shutdown.drain), then the rest stops in reverse start order.
func (a *assembly) stop() {
	cfg := a.config()
	a.admin.handler.SetReady(false)
	a.grpc.health.Shutdown()
	if d := cfg.Shutdown.Delay.D(); d > 0 {
		time.Sleep(d) // let health checkers see NOT_SERVING before the listeners go
	}
	drain := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), cfg.Shutdown.Drain.D())
	}
	ctx, cancel := drain()
	a.push.stop(ctx) // SDS streams end first, or they would hold the gRPC drain to its deadline
	var wg sync.WaitGroup
	for _, c := range a.serving {
		wg.Go(func() { c.stop(ctx) })
	}
	wg.Wait()
	cancel()
	ctx, cancel = drain()
	defer cancel()
	for i := len(a.core) - 1; i >= 0; i-- {
		a.core[i].stop(ctx)
	}
	a.log.Info("stopped")
}

type off struct{}

func (off) String() string { return "off" }

func addrOrOff(a net.Addr) fmt.Stringer {
	if a == nil {
		return off{}
	}
	return a
}
