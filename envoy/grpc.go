package envoy

import (
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
)

// ServiceName is the gRPC service Envoy calls; its health status is reported
// under this name and under "" (the whole server).
const ServiceName = "envoy.service.auth.v3.Authorization"

// NewGRPCServer returns a gRPC server with the Authorization service, the
// grpc.health.v1 service (SERVING until hs.Shutdown) and server reflection.
func NewGRPCServer(cur *Current, hs *health.Server, opts ...grpc.ServerOption) *grpc.Server {
	s := grpc.NewServer(opts...)
	authv3.RegisterAuthorizationServer(s, NewAuthorizationServer(cur))
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(ServiceName, healthpb.HealthCheckResponse_SERVING)
	return s
}
