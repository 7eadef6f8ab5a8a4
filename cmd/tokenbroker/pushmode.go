package main

import (
	"context"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/sds"
)

// pushMode is push mode: the SDS server (package sds) that streams each
// credential's header value to Envoy's credential_injector, on the gRPC
// listener beside ext_authz and under the same listen.tls. It follows the
// decisions in force: a reload that removes or re-scopes a credential stops
// it reaching subscribers that may no longer have it, and a new credential
// becomes available to existing streams; new cache settings re-time the
// feeds. It starts after the token cache and decisions (it needs the
// filter) and the status page (which shows its subscribers).
//
// A gRPC server the listener retires (new listen.tls or address) ends its
// SDS streams as its drain starts: Envoy reconnects to the new server,
// whose TLS policy then applies, rather than keeping a stream the old
// policy admitted while the old server drains.
type pushMode struct {
	log       *zap.Logger
	reg       prometheus.Registerer
	tokens    *tokenCache
	decisions *decisions
	status    *statusPage
	srv       *sds.Server // nil until start

	mu   sync.Mutex                         // guards regs
	regs map[*grpc.Server]*sds.Registration // SDS on each gRPC server not retired yet
}

func (p *pushMode) start(*config.Config) error {
	p.srv = sds.New(sds.Options{Filter: p.decisions.filter, Tokens: p.tokens.Tokens, Logger: p.log, Reg: p.reg})
	if page := p.status.page.Load(); page != nil {
		page.SetSubscribers(p.srv.Subscribers)
	}
	return nil
}

func (p *pushMode) apply(cfg *config.Config) (change, error) {
	// Read before the token cache commits: afterwards it has the new ones.
	retime := settingsOf(cfg) != p.tokens.Settings()
	// decisions and the token cache commit before this component: the
	// filter is the new one and the cache has the new settings.
	return change{commit: func() {
		p.srv.Reconfigure(p.decisions.filter)
		if retime {
			p.srv.Resync()
		}
	}}, nil
}

// invalidate makes the subscribers of credential name get a new token (or
// the fail-closed value) instead of the one just dropped from the cache.
func (p *pushMode) invalidate(name string) {
	if p.srv != nil {
		p.srv.Invalidate(name)
	}
}

// register adds SDS to a gRPC server the listener builds (each address or
// TLS change builds a new one) and reports it SERVING in gRPC health.
func (p *pushMode) register(g *grpc.Server, health interface {
	SetServingStatus(string, healthpb.HealthCheckResponse_ServingStatus)
}) {
	r := p.srv.Register(g)
	p.mu.Lock()
	if p.regs == nil {
		p.regs = map[*grpc.Server]*sds.Registration{}
	}
	p.regs[g] = r
	p.mu.Unlock()
	health.SetServingStatus(sds.ServiceName, healthpb.HealthCheckResponse_SERVING)
}

// retire ends the SDS streams of a gRPC server that starts draining — a
// reload replaced it, or tokenbroker stops — while its other calls (Checks
// in flight) drain as usual.
func (p *pushMode) retire(g *grpc.Server) {
	p.mu.Lock()
	r := p.regs[g]
	delete(p.regs, g)
	p.mu.Unlock()
	if r != nil {
		r.End()
	}
}

// stop ends every SDS stream (Envoy keeps the last value it had and
// reconnects to another replica). The assembly calls it as draining starts,
// before the gRPC listener's graceful stop, which long-lived streams would
// otherwise hold to shutdown.drain; calling it again is harmless.
func (p *pushMode) stop(context.Context) {
	if p.srv != nil {
		p.srv.Stop()
	}
}
