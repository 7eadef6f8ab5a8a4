package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/envoy"
)

// cmdHealth asks a running tokenbroker whether it serves: gRPC health by
// default, or an admin URL such as /readyz. It exists for container
// HEALTHCHECKs, where distroless images have no curl or grpc_health_probe.
//
// With listen.tls the gRPC listener speaks only TLS: --config FILE reads the
// address and TLS settings the server uses, and the --tls-* flags say the
// rest. The admin listener is plain HTTP whatever listen.tls says (it hands
// out no tokens), so --http …/readyz works with TLS and client certificates
// alike; that is what the Dockerfile and the Helm chart probe.
func cmdHealth(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("health", stderr)
	var d dialFlags
	d.register(fs)
	service := fs.String("service", envoy.ServiceName, "gRPC health service `NAME` (\"\" = the whole server)")
	url := fs.String("http", "", "ask this `URL` instead (e.g. http://127.0.0.1:9193/readyz, the admin listener); 200 = healthy")
	timeout := fs.Duration("timeout", 3*time.Second, "time to wait for the answer")
	if err := parseArgs(fs, args); err != nil {
		return 2
	}
	if err := d.load(); err != nil {
		printConfigErrors(stderr, d.config, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	target := *url
	if target == "" && d.cfg != nil && d.cfg.Listen.GRPC == "" && !d.set("grpc") {
		if d.cfg.Listen.Admin == "" {
			fmt.Fprintf(stderr, "tokenbroker health: %s has neither listen.grpc nor listen.admin to ask\n", d.config)
			return 2
		}
		target = "http://" + localAddr(d.cfg.Listen.Admin) + "/readyz"
	}
	if target != "" {
		return healthHTTP(ctx, &d, target, stdout, stderr)
	}
	conn, addr, err := d.dial()
	if err != nil {
		fmt.Fprintf(stderr, "tokenbroker health: %v\n", err)
		return 1
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: *service})
	if err != nil {
		fmt.Fprintf(stderr, "tokenbroker health: %s: %v\n", addr, err)
		return 1
	}
	fmt.Fprintln(stdout, resp.GetStatus())
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return 1
	}
	return 0
}

// healthHTTP asks url; 200 is healthy. An https URL uses the --tls-* flags.
func healthHTTP(ctx context.Context, d *dialFlags, url string, stdout, stderr io.Writer) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		fmt.Fprintf(stderr, "tokenbroker health: %v\n", err)
		return 2
	}
	client := &http.Client{}
	if req.URL.Scheme == "https" {
		// Only the --tls-* flags here: listen.tls describes the token
		// listeners, not whatever serves this URL.
		tc, err := d.tlsConfig(req.URL.Host, config.ListenTLS{})
		if err != nil {
			fmt.Fprintf(stderr, "tokenbroker health: %v\n", err)
			return 2
		}
		if tc == nil {
			tc = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		client.Transport = &http.Transport{TLSClientConfig: tc}
	}
	resp, err := client.Do(req)
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
