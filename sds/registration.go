package sds

import (
	"context"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/config"
	"github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Registration is SDS on one gRPC server. Each has its own go-control-plane
// server whose context ends the streams that came in through it, and only
// those: a reload that replaces the gRPC server (new listen.tls, new
// address) ends them with End, so Envoy reconnects to the new server and
// is judged by the new TLS policy, instead of keeping a stream the old
// policy admitted for as long as the old server drains — forever, for a
// stream nobody closes. Checks on the old server are not affected.
type Registration struct {
	xds    serverv3.Server
	ctx    context.Context // ended by End, or by Stop through the Server's
	cancel context.CancelFunc
	stop   context.Context // the Server's: ended by Stop
}

// registrations numbers every Registration of the process.
var registrations atomic.Int64

// regShift places a registration's number above go-control-plane's stream
// ids, which every xDS server counts from 1: a stream's key stays unique
// across registrations (2^40 streams per server are never reached).
const regShift = 40

func (s *Server) register(g grpc.ServiceRegistrar) *Registration {
	r := &Registration{stop: s.ctx}
	r.ctx, r.cancel = context.WithCancel(s.ctx)
	r.xds = serverv3.NewServer(r.ctx, watcher{s}, regCallbacks{callbacks{s}, registrations.Add(1) << regShift},
		// An empty request subscribes to nothing: Envoy always names its secrets.
		config.DeactivateLegacyWildcard(),
		sotw.WithLogger(s.xdsLogger()))
	secretv3.RegisterSecretDiscoveryServiceServer(g, service{r: r})
	return r
}

// End ends every SDS stream that came in through this registration, now
// and from here on, while its gRPC server drains the rest. Envoy keeps
// the value it has and reconnects (to the server that replaced this one).
// Calling it again is harmless.
func (r *Registration) End() { r.cancel() }

// ended is the status a stream of r ends with: a registration ended while
// the stream's caller and the Server still run says so (Unavailable, the
// code Envoy retries), where go-control-plane would end it silently.
func (r *Registration) ended(ctx context.Context, err error) error {
	if err == nil && r.ctx.Err() != nil && r.stop.Err() == nil && ctx.Err() == nil {
		return status.Error(codes.Unavailable, "sds: this server was replaced by a reload (listen.grpc or listen.tls); reconnect")
	}
	return err
}

// service exposes the two streaming methods; FetchSecrets (REST-style
// polling) stays unimplemented: a unary call has nothing to keep fresh.
type service struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	r *Registration
}

// Each stream reads through a pump with a closer (closer.go), so the server
// can end it alone.
func (v service) StreamSecrets(st secretv3.SecretDiscoveryService_StreamSecretsServer) error {
	c := newCloser(st.Context())
	defer c.cancel()
	return c.result(v.r.ended(st.Context(), v.r.xds.StreamSecrets(sotwStream{st, newPump(c, st.Recv)})))
}

func (v service) DeltaSecrets(st secretv3.SecretDiscoveryService_DeltaSecretsServer) error {
	c := newCloser(st.Context())
	defer c.cancel()
	return c.result(v.r.ended(st.Context(), v.r.xds.DeltaSecrets(deltaStream{st, newPump(c, st.Recv)})))
}

// regCallbacks are the callbacks of one registration's xDS server: its
// stream ids, tagged with the registration's number, key the streams.
type regCallbacks struct {
	callbacks
	tag int64
}

func (c regCallbacks) OnStreamOpen(ctx context.Context, id int64, typeURL string) error {
	return c.callbacks.OnStreamOpen(ctx, c.tag|id, typeURL)
}

func (c regCallbacks) OnStreamClosed(id int64, n *corev3.Node) {
	c.callbacks.OnStreamClosed(c.tag|id, n)
}

func (c regCallbacks) OnDeltaStreamOpen(ctx context.Context, id int64, typeURL string) error {
	return c.callbacks.OnDeltaStreamOpen(ctx, c.tag|id, typeURL)
}

func (c regCallbacks) OnDeltaStreamClosed(id int64, n *corev3.Node) {
	c.callbacks.OnDeltaStreamClosed(c.tag|id, n)
}

func (c regCallbacks) OnStreamRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	return c.callbacks.OnStreamRequest(c.tag|id, req)
}

func (c regCallbacks) OnStreamResponse(ctx context.Context, id int64, req *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	c.callbacks.OnStreamResponse(ctx, c.tag|id, req, resp)
}

func (c regCallbacks) OnStreamDeltaRequest(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	return c.callbacks.OnStreamDeltaRequest(c.tag|id, req)
}

func (c regCallbacks) OnStreamDeltaResponse(id int64, req *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
	c.callbacks.OnStreamDeltaResponse(c.tag|id, req, resp)
}
