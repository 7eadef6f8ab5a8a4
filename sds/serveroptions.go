package sds

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// ServerOptions are the gRPC server settings of the listener that carries
// SDS (listen.grpc, beside ext_authz):
//
//   - at most MaxStreamsPerConnection concurrent streams per connection
//     (gRPC's default is unlimited): one connection cannot open more
//     streams than its identity may hold, so the refusals happen in HTTP/2
//     flow control, before a handler runs; a client over the limit waits
//     or opens another connection, as Envoy's pool does;
//   - the server pings a connection idle for a minute and drops it when
//     the ping goes unanswered for 20 s: a peer that vanished (a killed
//     node, a dropped NAT entry) stops holding its streams' budget within
//     about 80 s instead of TCP's hours;
//   - clients may ping every 10 s, with or without streams (gRPC's default
//     is at most every 5 minutes with a stream, and a GOAWAY otherwise):
//     Envoy's HTTP/2 connection_keepalive is commonly set to tens of
//     seconds, and must not cost its SDS streams; a client pinging faster
//     is one gRPC closes.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxConcurrentStreams(MaxStreamsPerConnection),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
}
