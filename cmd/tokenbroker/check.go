package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/filter"
)

// cmdCheck sends one CheckRequest shaped like Envoy's and prints the answer,
// with any token shortened so it never lands whole in a terminal or a log.
// With --config it also reaches the listener the way that file says (address,
// listen.tls) and, on a denial, explains it from that file's routes.
func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("check", stderr)
	var d dialFlags
	d.register(fs)
	host := fs.String("host", "", "destination `HOST` (:authority) of the outbound request (required)")
	path := fs.String("path", "/", "request `PATH`, with any query")
	method := fs.String("method", "GET", "request `METHOD`")
	cred := fs.String("credential", "", "credential `NAME` sent as context_extensions[\"credential\"], as an Envoy per-route setting would")
	principal := fs.String("principal", "", "caller `ID` sent as attributes.source.principal (a SPIFFE ID under mTLS; for allowed_sources)")
	source := fs.String("source-address", "", "caller `IP` sent as attributes.source.address (for allowed_sources)")
	timeout := fs.Duration("timeout", 5*time.Second, "time to wait for the answer")
	if err := parseArgs(fs, args); err != nil {
		return 2
	}
	if *host == "" {
		fmt.Fprintln(stderr, "tokenbroker check: --host is required (tokenbroker check --help lists the flags)")
		return 2
	}
	if err := d.load(); err != nil {
		printConfigErrors(stderr, d.config, err)
		return 1
	}
	conn, addr, err := d.dial()
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
		req.Attributes.ContextExtensions = map[string]string{filter.ContextExtensionKey: *cred}
	}
	if *principal != "" || *source != "" {
		req.Attributes.Source = &authv3.AttributeContext_Peer{Principal: *principal}
		if *source != "" {
			req.Attributes.Source.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{
				SocketAddress: &corev3.SocketAddress{Address: *source}}}
		}
	}
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, req)
	if err != nil {
		fmt.Fprintf(stderr, "tokenbroker check: %s: %v\n", addr, err)
		return 1
	}
	if ok := resp.GetOkResponse(); ok != nil {
		fmt.Fprintf(stdout, "ALLOWED %s %s%s\n", *method, *host, *path)
		printHeaders(stdout, "  set ", ok.GetHeaders())
		return 0
	}
	dr := resp.GetDeniedResponse()
	fmt.Fprintf(stdout, "DENIED %d %s %s%s\n", dr.GetStatus().GetCode(), *method, *host, *path)
	printHeaders(stdout, "  ", dr.GetHeaders())
	reason := ""
	for _, h := range dr.GetHeaders() {
		if h.GetHeader().GetKey() == filter.ReasonHeader {
			reason = h.GetHeader().GetValue()
		}
	}
	if d.cfg == nil {
		fmt.Fprintln(stdout, "  (add --config FILE, the server's configuration, to see which routes this host has and why none matched)")
	} else {
		explainDenial(stdout, d.cfg, reason, filter.Request{Host: *host, Path: *path, Method: *method, Credential: *cred})
	}
	return 3
}

// maxListed bounds how many other hosts a "no route" explanation names, so
// a configuration with thousands of routes does not flood the terminal.
const maxListed = 10

// explainDenial says, from cfg, why r was denied for reason.
func explainDenial(w io.Writer, cfg *config.Config, reason string, r filter.Request) {
	fmt.Fprintf(w, "why (from %s):\n", cfg.File)
	switch reason {
	case "unknown credential":
		fmt.Fprintf(w, "  --credential %q names no credential; the configuration has: %s\n", r.Credential, strings.Join(listed(slices.Sorted(maps.Keys(cfg.Credentials))), ", "))
		return
	case "source not allowed":
		fmt.Fprintln(w, "  the credential's allowed_sources do not include this caller: pass --principal SPIFFE_ID or --source-address IP as Envoy would")
		return
	case "token unavailable", "mint budget used up":
		fmt.Fprintln(w, "  the route matched but no valid token could be had: the server's log names the IdP's answer;")
		fmt.Fprintln(w, "  tokenbroker_mints_total{result=\"error\"} and the /status page show the credential's state")
		return
	case "no route":
	default:
		fmt.Fprintf(w, "  the server denied it (%s)\n", reason)
		return
	}
	verdicts := filter.Explain(cfg.Routes, r.Host, r.Path, r.Method)
	if len(verdicts) == 0 {
		var hosts []string
		for _, rt := range cfg.Routes {
			if !slices.Contains(hosts, rt.Host) {
				hosts = append(hosts, rt.Host)
			}
		}
		fmt.Fprintf(w, "  no route names host %s; routes exist for: %s\n", r.Host, strings.Join(listed(hosts), ", "))
	}
	for _, v := range verdicts {
		rt := v.Route
		desc := "host " + rt.Host
		if rt.PathPrefix != "" {
			desc += " path_prefix " + rt.PathPrefix
		}
		if len(rt.Methods) > 0 {
			desc += " methods " + strings.Join(rt.Methods, ",")
		}
		why := v.Why
		if why == "" {
			why = "matches here: the server's configuration differs from this file, or the path is not canonical"
		}
		fmt.Fprintf(w, "  %s:%d: %s → %s: %s\n", cfg.File, rt.Line, desc, rt.Credential, why)
	}
	fmt.Fprintf(w, "  no route matched, and default_action is %s\n", cfg.DefaultAction)
}

// listed shortens a list to maxListed entries.
func listed(names []string) []string {
	if len(names) <= maxListed {
		return names
	}
	return append(names[:maxListed:maxListed], fmt.Sprintf("… %d more", len(names)-maxListed))
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
