package main

import (
	"crypto/tls"
	"net/http"
	"sync/atomic"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"

	"github.com/tokenbroker/tokenbroker/admin"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/envoy"
	"github.com/tokenbroker/tokenbroker/filter"
	"github.com/tokenbroker/tokenbroker/internal/httpserver"
)

// The four listeners. Each is a listener (listener.go: a new address is
// bound before the old one closes; new listen.tls settings get a new
// server on the same socket) plus what its server needs.

// grpcListener is listen.grpc: Envoy's ext_authz v3 service, gRPC health
// and reflection, and every service added to services (push mode's SDS
// registers there), over listen.tls when set.
type grpcListener struct {
	listener
	health   *health.Server
	decide   *envoy.Current
	services []func(*grpc.Server) // more services on the same port
	draining []func(*grpc.Server) // run as a server's drain starts (push mode ends its SDS streams)
	options  []grpc.ServerOption  // more server options (interceptors, stats handlers)
}

func newGRPCListener(decide *envoy.Current, log *zap.Logger) *grpcListener {
	g := &grpcListener{health: health.NewServer(), decide: decide}
	g.listener = listener{name: "grpc", log: log,
		field:    func(c *config.Config) *string { return &c.Listen.GRPC },
		settings: func(c *config.Config) any { return c.Listen.TLS },
		build:    g.build}
	return g
}

func (g *grpcListener) build(cfg *config.Config) (server, error) {
	opts := append([]grpc.ServerOption(nil), g.options...)
	// listen.tls: certificates re-read on rotation; with client_ca_file,
	// callers without a valid client certificate fail the handshake.
	tlsCfg, err := listenTLS(cfg.Listen.TLS)
	if err != nil {
		return nil, err
	}
	if tlsCfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	s := envoy.NewGRPCServer(g.decide, g.health, opts...)
	for _, register := range g.services {
		register(s)
	}
	draining := func() {
		for _, f := range g.draining {
			f(s)
		}
	}
	return grpcServer{Server: s, name: g.name, log: g.log, draining: draining}, nil
}

// forwardAuthListener is listen.http with forward_auth.*: the HTTP
// forward-auth server (nginx auth_request, Caddy, Traefik, Envoy
// http_service), asking the same decisions as gRPC. A new
// forward_auth.envoy_path_prefix applies to the next request.
type forwardAuthListener struct {
	listener
	decide  *envoy.Current
	handler atomic.Pointer[envoy.ForwardAuth]
	prefix  *string // in force; nil before start
}

func newForwardAuthListener(decide *envoy.Current, log *zap.Logger) *forwardAuthListener {
	f := &forwardAuthListener{decide: decide}
	f.listener = listener{name: "http", log: log,
		field:    func(c *config.Config) *string { return &c.Listen.HTTP },
		settings: func(c *config.Config) any { return c.Listen.TLS },
		build: func(cfg *config.Config) (server, error) {
			// The forward-auth listener hands out tokens too: same TLS, same client-certificate rule.
			t, err := httpTLS(cfg.Listen.TLS)
			if err != nil {
				return nil, err
			}
			return httpServer{Server: envoy.NewForwardAuthServer(f), tls: t, name: "http", log: log}, nil
		}}
	return f
}

func (f *forwardAuthListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.handler.Load().ServeHTTP(w, r)
}

func (f *forwardAuthListener) start(cfg *config.Config) error { return now(f.apply(cfg)) }

func (f *forwardAuthListener) apply(cfg *config.Config) (change, error) {
	var handler change
	if p := cfg.ForwardAuth.EnvoyPathPrefix; f.prefix == nil || *f.prefix != p {
		h := envoy.NewForwardAuth(f.decide, p, f.log)
		handler.commit = func() { f.handler.Store(h); f.prefix = &p }
	}
	ch, err := f.listener.apply(cfg)
	if err != nil {
		return change{}, err
	}
	return handler.then(ch), nil // the handler first: the server may serve at once
}

// brokerListener is listen.broker: the broker's token endpoint (POST
// broker.path) over listen.tls when set.
type brokerListener struct{ listener }

func newBrokerListener(endpoint http.Handler, log *zap.Logger) *brokerListener {
	return &brokerListener{listener{name: "broker", log: log,
		field:    func(c *config.Config) *string { return &c.Listen.Broker },
		settings: func(c *config.Config) any { return c.Listen.TLS },
		build: func(cfg *config.Config) (server, error) {
			// listen.tls covers every listener that hands out tokens.
			t, err := httpTLS(cfg.Listen.TLS)
			if err != nil {
				return nil, err
			}
			return httpServer{Server: newBrokerServer(endpoint, cfg.Broker), tls: t, name: "broker", log: log}, nil
		}}}
}

// newBrokerServer bounds the broker listener; its write timeout covers the
// longest upstream's mint (with one retry) of the section it is built with.
func newBrokerServer(h http.Handler, cfg config.Broker) *http.Server {
	return httpserver.New(h, httpserver.Limits{Write: broker.WriteTimeout(cfg)})
}

// adminListener is listen.admin with admin.*: /healthz, /readyz, /metrics,
// the status page and the admin API. A new admin token applies to the next
// request. It serves no token, so listen.tls does not apply.
type adminListener struct {
	listener
	handler *admin.Server
	token   atomic.Pointer[string] // admin.token_file's token; "" requires none
}

func newAdminListener(h *admin.Server, a *assembly, log *zap.Logger) *adminListener {
	l := &adminListener{handler: h}
	l.listener = listener{name: "admin", log: log,
		field: func(c *config.Config) *string { return &c.Listen.Admin },
		build: func(*config.Config) (server, error) {
			return httpServer{Server: newAdminServer(h), name: "admin", log: log}, nil
		}}
	purge := func(name string, local bool) (int, bool) {
		f, _ := a.decisions.current.Load().(*filter.Filter)
		if f == nil {
			return 0, false
		}
		k, ok := f.Key(name)
		if !ok {
			return 0, false
		}
		// By identity, not by the name a slot was first made under: a
		// credential renamed by a reload keeps its slot (and token).
		id, n := k.ID, 0
		for _, st := range a.tokens.Snapshot() {
			if st.Key.ID == id {
				if local {
					a.tokens.InvalidateLocal(st.Key)
				} else {
					a.tokens.Invalidate(st.Key)
				}
				n++
			}
		}
		a.push.invalidate(name) // SDS subscribers stop using the dropped token too
		log.Info("credential invalidated", zap.String("credential", name), zap.Int("tokens", n), zap.Bool("local", local))
		return n, true
	}
	h.Handle("POST /admin/credentials/{name}/invalidate", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		admin.Invalidate(*l.token.Load(), purge).ServeHTTP(w, r)
	}))
	return l
}

func newAdminServer(h http.Handler) *http.Server { return httpserver.New(h, httpserver.Limits{}) }

func (l *adminListener) start(cfg *config.Config) error { return now(l.apply(cfg)) }

func (l *adminListener) apply(cfg *config.Config) (change, error) {
	token := cfg.Admin.Token.Reveal()
	ch, err := l.listener.apply(cfg)
	if err != nil {
		return change{}, err
	}
	return change{commit: func() { l.token.Store(&token) }}.then(ch), nil
}

// httpTLS is listenTLS for an HTTP listener, offering HTTP/2 and HTTP/1.1.
func httpTLS(c config.ListenTLS) (*tls.Config, error) {
	t, err := listenTLS(c)
	if t != nil {
		t.NextProtos = []string{"h2", "http/1.1"}
	}
	return t, err
}
