package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/tokenbroker/tokenbroker/config"
)

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("validate", stderr)
	path := fs.String("config", "", "configuration file (required)")
	var lf logFlags
	lf.register(fs)
	if err := fs.Parse(args); err != nil {
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
