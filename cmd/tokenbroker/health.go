package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tokenbroker/tokenbroker/envoy"
)

// cmdHealth asks a running tokenbroker whether it serves: gRPC health by
// default, or an admin URL such as /readyz. It exists for container
// HEALTHCHECKs, where distroless images have no curl or grpc_health_probe.
func cmdHealth(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("health", stderr)
	addr := fs.String("grpc", "127.0.0.1:9191", "gRPC address to ask grpc.health.v1")
	service := fs.String("service", envoy.ServiceName, `gRPC health service name ("" = the whole server)`)
	url := fs.String("http", "", "ask this URL instead (e.g. http://127.0.0.1:9193/readyz); 200 = healthy")
	timeout := fs.Duration("timeout", 3*time.Second, "time to wait for the answer")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if *url != "" {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
		if err != nil {
			fmt.Fprintf(stderr, "tokenbroker health: %v\n", err)
			return 2
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Fprintf(stderr, "tokenbroker health: %v\n", err)
			return 1
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			fmt.Fprintf(stdout, "NOT SERVING (%s)\n", resp.Status)
			return 1
		}
		fmt.Fprintln(stdout, "SERVING")
		return 0
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintf(stderr, "tokenbroker health: %v\n", err)
		return 1
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: *service})
	if err != nil {
		fmt.Fprintf(stderr, "tokenbroker health: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, resp.GetStatus())
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return 1
	}
	return 0
}
