package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

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
	return 0
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
