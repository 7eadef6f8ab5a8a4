package main

import (
	"context"
	"fmt"
	"io"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// cmdCheck sends one CheckRequest shaped like Envoy's and prints the answer,
// with any token shortened so it never lands whole in a terminal or a log.
func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("check", stderr)
	addr := fs.String("grpc", "127.0.0.1:9191", "tokenbroker gRPC address")
	host := fs.String("host", "", "destination host (:authority) of the outbound request")
	path := fs.String("path", "/", "request path")
	method := fs.String("method", "GET", "request method")
	cred := fs.String("credential", "", "context_extensions[\"credential\"], as an Envoy per-route setting would send")
	timeout := fs.Duration("timeout", 5*time.Second, "time to wait for the answer")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *host == "" {
		fmt.Fprintln(stderr, "tokenbroker check: --host is required")
		return 2
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintf(stderr, "tokenbroker check: %v\n", err)
		return 1
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Host: *host, Path: *path, Method: *method, Scheme: "http",
			Headers: map[string]string{":authority": *host, ":path": *path, ":method": *method},
		}},
	}}
	if *cred != "" {
		req.Attributes.ContextExtensions = map[string]string{"credential": *cred}
	}
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, req)
	if err != nil {
		fmt.Fprintf(stderr, "tokenbroker check: %v\n", err)
		return 1
	}
	if ok := resp.GetOkResponse(); ok != nil {
		fmt.Fprintf(stdout, "ALLOWED %s %s%s\n", *method, *host, *path)
		printHeaders(stdout, "  set ", ok.GetHeaders())
		return 0
	}
	d := resp.GetDeniedResponse()
	fmt.Fprintf(stdout, "DENIED %d %s %s%s\n", d.GetStatus().GetCode(), *method, *host, *path)
	printHeaders(stdout, "  ", d.GetHeaders())
	return 3
}

func printHeaders(w io.Writer, prefix string, hs []*corev3.HeaderValueOption) {
	for _, h := range hs {
		fmt.Fprintf(w, "%s%s: %s\n", prefix, h.GetHeader().GetKey(), shorten(h.GetHeader().GetValue()))
	}
}

// shorten keeps enough of a header value to recognise it and hides the rest.
func shorten(v string) string {
	if len(v) <= 20 {
		return v
	}
	return fmt.Sprintf("%s… (%d chars)", v[:16], len(v))
}
