package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tokenbroker/tokenbroker/admin"
	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
	"github.com/tokenbroker/tokenbroker/envoy"
	"github.com/tokenbroker/tokenbroker/filter"
	"github.com/tokenbroker/tokenbroker/internal/tlsreload"
	"github.com/tokenbroker/tokenbroker/sds"
)

func cmdServe(args []string, stderr io.Writer) int {
	fs := newFlagSet("serve", stderr)
	path := fs.String("config", "", "configuration file (required)")
	var lf logFlags
	lf.register(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "tokenbroker serve: --config FILE is required")
		return 2
	}
	log, err := lf.logger(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "tokenbroker serve: %v\n", err)
		return 2
	}
	defer func() { _ = log.Sync() }()
	// Watch before reading, so no edit made after the read is missed; a
	// watch that cannot start leaves SIGHUP as the way to reload.
	cw, err := watchConfig(*path)
	if err != nil {
		log.Warn("configuration file not watched; reload with SIGHUP", zap.Error(err))
	} else {
		defer cw.close() // on early returns; closing twice is harmless
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printConfigErrors(stderr, *path, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	srv, err := start(cfg, log)
	if err != nil {
		log.Error("start failed", zap.Error(err))
		return 1
	}
	reloadCtx, stopReload := context.WithCancel(ctx)
	reloading := make(chan struct{})
	go func() {
		defer close(reloading)
		srv.reloadLoop(reloadCtx, *path, cw, hup, nil)
	}()
	<-ctx.Done()
	log.Info("shutting down", zap.String("signal", context.Cause(ctx).Error()))
	stopReload()
	<-reloading // no reload may swap the configuration while shutting down
	srv.shutdown()
	return 0
}

// server is one running tokenbroker: its cache, its filter and its listeners.
type server struct {
	cfg     *config.Config
	log     *zap.Logger
	tokens  *cache.Tokens
	l2      *cache.Redis // nil without cache.redis
	current envoy.Current
	health  *health.Server
	grpc    *grpc.Server
	admin   *admin.Server
	http    *http.Server
	fwd     *http.Server // HTTP forward-auth (listen.http); nil when off
	extra   *extras      // broker, budgets and status page (extras.go)
	sds     *sds.Server  // push mode, on the gRPC listener

	grpcAddr, adminAddr net.Addr // bound addresses (port 0 resolved)
	httpAddr            net.Addr
	done                chan struct{}

	reloadMu      sync.Mutex // serialises reloads; reload replaces cfg under it
	reloads       *reloadMetrics
	filterMetrics *filter.Metrics // shared by every filter a reload builds
}

// start builds everything cfg describes and starts listening. On error
// nothing is left running.
func start(cfg *config.Config, log *zap.Logger) (_ *server, err error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s := &server{cfg: cfg, log: log, health: health.NewServer(), admin: admin.New(reg), done: make(chan struct{})}
	s.filterMetrics, s.reloads = filter.NewMetrics(reg), newReloadMetrics(reg)
	l2, l2Meter, err := sharedTier(cfg.Cache.Redis, log, reg)
	if err != nil {
		return nil, err
	}
	s.l2 = l2
	s.extra = newExtras(cfg, l2, log, reg)
	opts := cache.Options{
		MayMint:      s.extra.mayMint,
		MaxTokens:    cfg.Cache.MaxTokens,
		ExpiryMargin: cfg.Cache.ExpiryMargin.D(),
		RefreshAhead: cfg.Cache.RefreshAhead,
		Logger:       log,
		Meter:        cache.NewMetrics(reg),
	}
	if l2 != nil {
		opts.L2, opts.L2Meter = l2, l2Meter // a nil *cache.Redis must not become a non-nil Shared
	}
	s.tokens, err = cache.New(opts)
	if err != nil {
		if l2 != nil {
			_ = l2.Close()
		}
		return nil, err
	}
	defer func() {
		if err != nil {
			s.closeAll()
		}
	}()
	sources, err := buildSources(cfg, log)
	if err != nil {
		return nil, err
	}
	f, err := filter.New(cfg, sources, s.tokens, log, s.filterMetrics)
	if err != nil {
		return nil, err
	}
	s.current.Store(f)
	s.sds = sds.New(sds.Options{Filter: f, Tokens: s.tokens, Logger: log, Reg: reg})

	var lns []net.Listener
	defer func() {
		if err != nil {
			for _, ln := range lns {
				_ = ln.Close()
			}
		}
	}()
	listen := func(what, addr string) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen.%s: %w", what, err)
		}
		lns = append(lns, ln)
		return ln, nil
	}
	if err = s.extra.build(s, listen); err != nil {
		return nil, err
	}
	s.extra.page.SetSubscribers(s.sds.Subscribers)
	var grpcLn, adminLn net.Listener
	if cfg.Listen.GRPC != "" {
		if grpcLn, err = listen("grpc", cfg.Listen.GRPC); err != nil {
			return nil, err
		}
		s.grpcAddr = grpcLn.Addr()
	}
	if cfg.Listen.Admin != "" {
		if adminLn, err = listen("admin", cfg.Listen.Admin); err != nil {
			return nil, err
		}
		s.adminAddr = adminLn.Addr()
	}

	var fwdLn net.Listener
	if cfg.Listen.HTTP != "" {
		if fwdLn, err = listen("http", cfg.Listen.HTTP); err != nil {
			return nil, err
		}
		s.httpAddr = fwdLn.Addr()
		if cfg.Listen.TLS.Enabled() {
			// The forward-auth listener hands out tokens too: same TLS, same client-certificate rule.
			if fwdLn, err = tlsreload.NewListener(fwdLn, cfg.Listen.TLS); err != nil {
				return nil, fmt.Errorf("listen.tls: %w", err)
			}
		}
	}

	var grpcOpts []grpc.ServerOption
	if cfg.Listen.TLS.Enabled() {
		// listen.tls: certificates re-read on rotation; with client_ca_file,
		// callers without a valid client certificate fail the handshake.
		tlsCfg, err := tlsreload.ServerConfig(cfg.Listen.TLS)
		if err != nil {
			return nil, fmt.Errorf("listen.tls: %w", err)
		}
		grpcOpts = append(grpcOpts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	s.grpc = envoy.NewGRPCServer(&s.current, s.health, grpcOpts...)
	s.sds.Register(s.grpc) // same listener and listen.tls as ext_authz
	s.health.SetServingStatus(sds.ServiceName, healthpb.HealthCheckResponse_SERVING)
	if grpcLn != nil {
		go func() {
			if err := s.grpc.Serve(grpcLn); err != nil {
				log.Error("grpc server stopped", zap.Error(err))
			}
		}()
	}
	if adminLn != nil {
		s.http = &http.Server{Handler: s.admin, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := s.http.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("admin server stopped", zap.Error(err))
			}
		}()
	}
	if fwdLn != nil {
		s.fwd = envoy.NewForwardAuthServer(envoy.NewForwardAuth(&s.current, cfg.ForwardAuth.EnvoyPathPrefix, log))
		go func() {
			if err := s.fwd.Serve(fwdLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("forward-auth server stopped", zap.Error(err))
			}
		}()
	}
	s.extra.serve()
	s.admin.SetReady(true)
	log.Info("serving",
		zap.String("version", buildVersion()),
		zap.Stringer("grpc", addrOrOff(s.grpcAddr)),
		zap.Stringer("admin", addrOrOff(s.adminAddr)),
		zap.Stringer("http", addrOrOff(s.httpAddr)),
		zap.Stringer("broker", addrOrOff(s.extra.addr)),
		zap.Int("credentials", len(cfg.Credentials)),
		zap.Int("routes", len(cfg.Routes)),
		zap.String("default_action", cfg.DefaultAction))
	return s, nil
}

// shutdown stops taking traffic in the order load balancers and Envoy's
// health checks need: readiness and gRPC health turn NOT_SERVING first, then
// after shutdown.delay the listeners close while in-flight Checks finish
// (at most shutdown.drain), then the cache stops.
func (s *server) shutdown() {
	s.admin.SetReady(false)
	s.health.Shutdown()
	if d := s.cfg.Shutdown.Delay.D(); d > 0 {
		time.Sleep(d) // let health checkers see NOT_SERVING before the listener goes
	}
	fwdStopped := s.stopForwardAuth()
	stopped := make(chan struct{})
	go func() {
		s.sds.Stop() // SDS streams end (Envoy keeps its values) so they do not hold the drain
		s.grpc.GracefulStop()
		close(stopped)
	}()
	drain := time.NewTimer(s.cfg.Shutdown.Drain.D())
	defer drain.Stop()
	select {
	case <-stopped:
	case <-drain.C:
		s.log.Warn("drain deadline passed; closing remaining streams", zap.Duration("drain", s.cfg.Shutdown.Drain.D()))
		s.grpc.Stop()
		<-stopped
	}
	<-fwdStopped
	s.extra.shutdown(s.cfg.Shutdown.Drain.D())
	if s.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Shutdown.Drain.D())
		_ = s.http.Shutdown(ctx)
		cancel()
	}
	s.closeAll()
	s.log.Info("stopped")
}

// stopForwardAuth closes the forward-auth listener and lets requests in
// flight finish for at most shutdown.drain; the channel closes when done.
func (s *server) stopForwardAuth() <-chan struct{} {
	done := make(chan struct{})
	if s.fwd == nil {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Shutdown.Drain.D())
		defer cancel()
		if err := s.fwd.Shutdown(ctx); err != nil {
			s.log.Warn("drain deadline passed; closing forward-auth connections", zap.Error(err))
			_ = s.fwd.Close()
		}
	}()
	return done
}

func (s *server) closeAll() {
	s.extra.close()
	if s.sds != nil {
		s.sds.Stop()
	}
	s.tokens.Close()
	if s.l2 != nil {
		_ = s.l2.Close()
	}
}

// buildSources makes a token source for every credential.
func buildSources(cfg *config.Config, log *zap.Logger) (map[string]credential.Source, error) {
	out := make(map[string]credential.Source, len(cfg.Credentials))
	for name, c := range cfg.Credentials {
		clog := log.With(zap.String("credential", name))
		src, err := credential.FromConfig(c, func(format string, args ...any) { clog.Sugar().Infof(format, args...) })
		if err != nil {
			return nil, fmt.Errorf("credential %q: %w", name, err)
		}
		out[name] = src
	}
	return out, nil
}

type off struct{}

func (off) String() string { return "off" }

func addrOrOff(a net.Addr) fmt.Stringer {
	if a == nil {
		return off{}
	}
	return a
}
