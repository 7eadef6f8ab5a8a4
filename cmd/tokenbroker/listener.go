package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/tlsreload"
)

// listener is one listen.* address and the server behind it: the part every
// listener component (gRPC, forward-auth, broker, admin) shares.
//
// A new configuration that changes its address binds the new address first,
// serves it, and only then closes the old one, whose requests in flight
// finish (at most shutdown.drain). One that changes only the server's own
// settings (listen.tls) attaches a new server to the same socket: the
// address never refuses a connection, and the old server drains.
type listener struct {
	name     string                       // the key under listen:, for messages
	field    func(*config.Config) *string // its address in a configuration
	settings func(*config.Config) any     // what needs a new server when it changes (nil: nothing)
	build    func(*config.Config) (server, error)
	log      *zap.Logger

	mu  sync.Mutex // guards cur
	cur *serving   // nil: off

	running sync.WaitGroup // servers' Serve calls and the drains of replaced servers
}

// serving is one server on one socket.
type serving struct {
	addr     string // as configured
	settings any
	sock     *socket
	ln       *handoff
	srv      server
}

// server is what a listener runs: a gRPC or an HTTP server.
type server interface {
	serve(net.Listener)        // until the listener closes
	drain(ctx context.Context) // let requests in flight finish until ctx ends, then close what is left
}

func (l *listener) current() *serving {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur
}

// addr is the bound address, nil when off.
func (l *listener) addr() net.Addr {
	if s := l.current(); s != nil {
		return s.sock.Addr()
	}
	return nil
}

func (l *listener) start(cfg *config.Config) error { return now(l.apply(cfg)) }

func (l *listener) apply(cfg *config.Config) (change, error) {
	addr := *l.field(cfg)
	var settings any
	if l.settings != nil {
		settings = l.settings(cfg)
	}
	old := l.current()
	if old == nil && addr == "" {
		return change{}, nil
	}
	if old != nil && addr == old.addr && reflect.DeepEqual(settings, old.settings) {
		return change{}, nil
	}
	if addr == "" {
		return change{
			commit: func() { l.set(nil) },
			retire: func() { l.retire(old, nil, cfg.Shutdown.Drain.D()) },
		}, nil
	}
	var restart []string
	sock := (*socket)(nil)
	if old != nil && addr == old.addr {
		sock = old.sock
	} else {
		s, err := bind(addr)
		switch {
		case err == nil:
			sock = s
		case old != nil && errors.Is(err, syscall.EADDRINUSE) && samePort(addr, old.sock.Addr()):
			// Another host on the running listener's port cannot be bound
			// while it listens, and closing it first would refuse callers:
			// this one change waits for a restart.
			restart = append(restart, fmt.Sprintf("listen.%s: %s shares its port with the running %s; kept until a restart", l.name, addr, old.addr))
			*l.field(cfg) = old.addr // cfg tells what is in force
			addr, sock = old.addr, old.sock
			if reflect.DeepEqual(settings, old.settings) {
				return change{restart: restart}, nil
			}
		default:
			return change{}, fmt.Errorf("listen.%s: %w", l.name, err)
		}
	}
	srv, err := l.build(cfg)
	if err != nil {
		if old == nil || sock != old.sock {
			sock.close()
		}
		return change{}, err
	}
	next := &serving{addr: addr, settings: settings, sock: sock, srv: srv}
	return change{
		restart: restart,
		commit: func() {
			next.ln = sock.attach() // on a shared socket this closes old.ln
			l.running.Go(func() { srv.serve(next.ln) })
			l.set(next)
			if old != nil && old.sock != sock {
				l.log.Info("listener moved", zap.String("listener", l.name), zap.Stringer("from", old.sock.Addr()), zap.Stringer("to", sock.Addr()))
			}
		},
		retire: func() { l.retire(old, sock, cfg.Shutdown.Drain.D()) },
		discard: func() {
			if old == nil || sock != old.sock {
				sock.close()
			}
			srv.drain(context.Background()) // never served: returns at once
		},
	}, nil
}

func (l *listener) set(s *serving) {
	l.mu.Lock()
	l.cur = s
	l.mu.Unlock()
}

// retire takes old out of service: its socket closes now unless the new
// server shares it (kept), and its server drains in the background.
func (l *listener) retire(old *serving, kept *socket, drain time.Duration) {
	if old == nil {
		return
	}
	if old.sock != kept {
		old.sock.close() // the old address refuses connections from here on
	}
	l.running.Go(func() {
		old.ln.settle()
		ctx, cancel := context.WithTimeout(context.Background(), drain)
		defer cancel()
		old.srv.drain(ctx)
	})
}

// stop closes the address and lets requests in flight finish until ctx ends.
func (l *listener) stop(ctx context.Context) {
	l.mu.Lock()
	s := l.cur
	l.cur = nil
	l.mu.Unlock()
	if s != nil {
		s.sock.close()
		s.ln.settle()
		s.srv.drain(ctx)
	}
	l.running.Wait()
}

// samePort reports whether addr names bound's port (a port of 0 never does).
func samePort(addr string, bound net.Addr) bool {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	port, err := strconv.Atoi(p)
	tcp, ok := bound.(*net.TCPAddr)
	return err == nil && ok && port != 0 && port == tcp.Port
}

// grpcServer is a gRPC server as a listener runs it.
type grpcServer struct {
	*grpc.Server
	name string
	log  *zap.Logger
	// draining, when set, runs as the drain starts: it ends the streams
	// that would otherwise outlive it (SDS) under settings no longer in force.
	draining func()
}

func (s grpcServer) serve(ln net.Listener) {
	if err := s.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
		s.log.Error("server stopped", zap.String("listener", s.name), zap.Error(err))
	}
}

func (s grpcServer) drain(ctx context.Context) {
	if s.draining != nil {
		s.draining()
	}
	stopped := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		s.log.Warn("drain deadline passed; closing remaining streams", zap.String("listener", s.name))
		s.Stop()
		<-stopped
	}
}

// httpServer is an HTTP server as a listener runs it; tls, when set, serves
// TLS on the listener (listen.tls).
type httpServer struct {
	*http.Server
	tls  *tls.Config
	name string
	log  *zap.Logger
}

func (s httpServer) serve(ln net.Listener) {
	if s.tls != nil {
		ln = tls.NewListener(ln, s.tls)
	}
	if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		s.log.Error("server stopped", zap.String("listener", s.name), zap.Error(err))
	}
}

func (s httpServer) drain(ctx context.Context) {
	if err := s.Shutdown(ctx); err != nil {
		s.log.Warn("drain deadline passed; closing remaining connections", zap.String("listener", s.name), zap.Error(err))
		_ = s.Close()
	}
}

// listenTLS is the TLS every listener that hands out tokens serves when
// listen.tls is set; nil without it. Certificates are re-read on rotation.
func listenTLS(c config.ListenTLS) (*tls.Config, error) {
	if !c.Enabled() {
		return nil, nil
	}
	cfg, err := tlsreload.ServerConfig(c)
	if err != nil {
		return nil, fmt.Errorf("listen.tls: %w", err)
	}
	return cfg, nil
}
