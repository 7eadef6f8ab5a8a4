package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
)

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("validate", stderr)
	path := fs.String("config", "", "configuration file (required)")
	var lf logFlags
	lf.register(fs)
	if err := parseArgs(fs, args); err != nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "tokenbroker validate: --config FILE is required")
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printConfigErrors(stderr, *path, err)
		return 1
	}
	// Keys, certificates and token files are parsed only when a source is
	// built: build them all so a bad PEM fails here, not at start-up.
	failed := false
	for _, name := range slices.Sorted(maps.Keys(cfg.Credentials)) {
		c := cfg.Credentials[name]
		if _, err := credential.FromConfig(c, nil); err != nil {
			fmt.Fprintf(stderr, "%s: credentials.%s: %v\n", *path, name, err)
			failed = true
		}
		if len(c.AllowedSources) == 0 {
			fmt.Fprintf(stderr, "%s: warning: credentials.%s has no allowed_sources: any caller that reaches tokenbroker can use it\n", *path, name)
		}
	}
	if failed {
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok (%d credentials, %d routes)\n", *path, len(cfg.Credentials), len(cfg.Routes))
	fmt.Fprintf(stdout, "%s: %s\n", *path, reloadReport(cfg))
	return 0
}

// reloadReport says what of cfg a running tokenbroker can change on reload
// (SIGHUP or a change of the file): everything, except moving a listener to
// another host on the port it holds, which cannot be bound while the old
// listener serves (and closing that first would refuse callers).
func reloadReport(cfg *config.Config) string {
	var fixed []string
	for _, l := range []struct{ name, addr string }{
		{"listen.grpc", cfg.Listen.GRPC}, {"listen.http", cfg.Listen.HTTP},
		{"listen.broker", cfg.Listen.Broker}, {"listen.admin", cfg.Listen.Admin},
	} {
		if _, port, err := net.SplitHostPort(l.addr); err == nil && port != "0" {
			fixed = append(fixed, l.name+" (port "+port+")")
		}
	}
	msg := "every setting reloads without a restart but tracing (the tracer is built at start)"
	if len(fixed) > 0 {
		msg += "; restart-only: another host on the same port for " + strings.Join(fixed, ", ")
	}
	return msg
}

// printConfigErrors prints one `FILE:LINE: field: problem` line per problem.
func printConfigErrors(w io.Writer, path string, err error) {
	var list config.Errors
	if errors.As(err, &list) {
		for _, e := range list {
			fmt.Fprintln(w, e.Error())
		}
		return
	}
	fmt.Fprintf(w, "%s: %v\n", path, err)
}
