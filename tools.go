//go:build tools

// Package main pins build-time dependencies so go mod tidy keeps them until real code imports them.
package tools
import (
 _ "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
 _ "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
 _ "google.golang.org/grpc"
 _ "google.golang.org/grpc/health"
 _ "google.golang.org/grpc/reflection"
 _ "github.com/dgraph-io/ristretto/v2"
 _ "go.uber.org/zap"
 _ "github.com/prometheus/client_golang/prometheus"
 _ "golang.org/x/sync/singleflight"
 _ "go.yaml.in/yaml/v3"
 _ "go.uber.org/goleak"
)
