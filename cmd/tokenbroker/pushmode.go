package main

import (
	"context"

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
// becomes available to existing streams. It starts after decisions (it needs
// the filter) and the status page (which shows its subscribers).
type pushMode struct {
	log       *zap.Logger
	reg       prometheus.Registerer
	tokens    *tokenCache
	decisions *decisions
	status    *statusPage
	srv       *sds.Server // nil until start
}

func (p *pushMode) start(*config.Config) error {
	p.srv = sds.New(sds.Options{Filter: p.decisions.filter, Tokens: p.tokens.Tokens, Logger: p.log, Reg: p.reg})
	if page := p.status.page.Load(); page != nil {
		page.SetSubscribers(p.srv.Subscribers)
	}
	return nil
}

func (p *pushMode) apply(*config.Config) (change, error) {
	// decisions commits before this component: its filter is the new one.
	return change{commit: func() { p.srv.Reconfigure(p.decisions.filter) }}, nil
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
	p.srv.Register(g)
	health.SetServingStatus(sds.ServiceName, healthpb.HealthCheckResponse_SERVING)
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
