// Command bareauthz is the baseline for tokenbroker's load benchmark: an
// Envoy ext_authz v3 gRPC server that answers every Check OK with one fixed
// header, set exactly as tokenbroker sets its token, and does nothing else.
// It uses the same gRPC server defaults, health and reflection services, so
// the difference between the two under the same load is what tokenbroker's
// own work costs.
//
//	bareauthz --grpc 127.0.0.1:0
//
// It prints one JSON line {"msg":"serving","grpc":ADDR} on stderr once
// listening and stops on SIGTERM/SIGINT.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("bareauthz", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("grpc", "127.0.0.1:9191", "listen address")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, *addr, stderr); err != nil {
		fmt.Fprintf(stderr, "bareauthz: %v\n", err)
		return 1
	}
	return 0
}

// serve answers Checks on addr until ctx ends.
func serve(ctx context.Context, addr string, stderr io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s := grpc.NewServer()
	authv3.RegisterAuthorizationServer(s, bare{})
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		hs.Shutdown()
		s.GracefulStop()
	}()
	line, _ := json.Marshal(map[string]string{"msg": "serving", "grpc": ln.Addr().String()})
	fmt.Fprintln(stderr, string(line))
	err = s.Serve(ln)
	<-stopped
	return err
}

// answer is built once: the baseline does no per-request work at all.
var answer = &authv3.CheckResponse{
	Status: &rpcstatus.Status{Code: int32(code.Code_OK)},
	HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
		Headers: []*corev3.HeaderValueOption{{
			Header:       &corev3.HeaderValue{Key: "authorization", Value: "Bearer bareauthz.fixed-token-of-a-typical-length-0123456789abcdef"},
			Append:       wrapperspb.Bool(false),
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}},
	}},
}

type bare struct {
	authv3.UnimplementedAuthorizationServer
}

func (bare) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return answer, nil
}
