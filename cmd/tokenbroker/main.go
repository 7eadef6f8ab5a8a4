// Command tokenbroker is an Envoy ext_authz server that injects cached
// machine-to-machine tokens into outbound requests.
//
//	tokenbroker serve    --config FILE   run the servers until SIGTERM/SIGINT
//	tokenbroker validate --config FILE   check a configuration file
//	tokenbroker check    --host HOST     ask a running tokenbroker, as Envoy would
//	tokenbroker health   --config FILE   exit 0 when a running tokenbroker serves
//	tokenbroker invalidate NAME --admin ADDR   drop a credential's cached tokens
//	tokenbroker version  [--json]        version, commit, build date, Go version
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

const usage = `usage: tokenbroker <command> [flags]

commands:
  serve    --config FILE   run the ext_authz and admin servers until SIGTERM/SIGINT
  validate --config FILE   exit 0 for a valid file; else print FILE:LINE: field: problem
  check    --host HOST     send one Check, as Envoy would, and print the answer (and why a denial)
  health                   exit 0 when a running tokenbroker serves (container healthchecks)
  invalidate NAME          drop a credential's cached tokens so the next request mints
  version  [--json]        print the version, commit, build date and Go version

tokenbroker <command> --help lists a command's flags.
common flags: --log-level debug|info|warn|error  --log-format json|console
`

// synopses are the first lines of each command's --help.
var synopses = map[string]string{
	"serve":      "serve --config FILE\n  Run the ext_authz, forward-auth, broker and admin servers until SIGTERM/SIGINT.",
	"validate":   "validate --config FILE\n  Exit 0 for a valid configuration; else print FILE:LINE: field: problem per problem.",
	"check":      "check --host HOST [--path P] [--method M] [--config FILE | --grpc ADDR]\n  Send one CheckRequest shaped like Envoy's and print the answer (tokens shortened).\n  Exit 0 allowed, 3 denied; with --config, a denial says which routes the host has.",
	"health":     "health [--config FILE | --grpc ADDR | --http URL]\n  Exit 0 when a running tokenbroker serves (container healthchecks).",
	"invalidate": "invalidate NAME [--admin ADDR] [--token-file FILE]\n  Drop a credential's cached tokens so the next request mints.",
	"version":    "version [--json]\n  Print the version, commit, build date and Go version.",
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without os.Exit, so tests can drive the command line.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	commands := map[string]func(args []string, stdout, stderr io.Writer) int{
		"serve":      func(args []string, _, stderr io.Writer) int { return cmdServe(args, stderr) },
		"validate":   cmdValidate,
		"check":      cmdCheck,
		"health":     cmdHealth,
		"invalidate": cmdInvalidate,
		"version":    cmdVersion,
	}
	switch cmd {
	case "--version", "-version":
		cmd = "version"
	case "help", "-h", "--help":
		if len(args) == 1 && commands[args[0]] != nil {
			return run([]string{args[0], "--help"}, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return 0
	}
	c := commands[cmd]
	if c == nil {
		fmt.Fprintf(stderr, "tokenbroker: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if wantsHelp(args) {
		// Help is an answer, not a usage error: the flag set writes it to
		// stdout (its "stderr" here) and the command's exit code is ignored.
		c([]string{"--help"}, stdout, stdout)
		return 0
	}
	return c(args, stdout, stderr)
}

// wantsHelp reports whether args ask for help before any "--".
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help", "--h":
			return true
		}
	}
	return false
}

// logFlags are accepted by every command that logs.
type logFlags struct{ level, format string }

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&l.format, "log-format", "json", "log format: json or console")
}

func (l *logFlags) logger(w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(l.level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	ec.EncodeDuration = zapcore.StringDurationEncoder
	var enc zapcore.Encoder
	switch strings.ToLower(l.format) {
	case "json":
		enc = zapcore.NewJSONEncoder(ec)
	case "console":
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	default:
		return nil, errors.New("--log-format: want json or console")
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), lvl), zap.ErrorOutput(zapcore.AddSync(w))), nil
}

// newFlagSet returns a flag set that reports errors instead of exiting and
// whose help spells flags the way the README does (--name).
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("tokenbroker "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { printHelp(fs.Output(), name, fs) }
	return fs
}

// printHelp writes a command's synopsis and its flags, one per line.
func printHelp(w io.Writer, name string, fs *flag.FlagSet) {
	synopsis := synopses[name]
	if synopsis == "" {
		synopsis = name + " [flags]"
	}
	fmt.Fprintf(w, "usage: tokenbroker %s\n\nflags:\n", synopsis)
	fs.VisitAll(func(f *flag.Flag) {
		arg, help := flag.UnquoteUsage(f)
		spelling := "--" + f.Name
		switch arg {
		case "":
		case "string":
			spelling += " VALUE"
		default:
			spelling += " " + strings.ToUpper(arg)
		}
		fmt.Fprintf(w, "  %-28s %s", spelling, help)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0s" {
			fmt.Fprintf(w, " (default %q)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}

// errUsage is returned by parseArgs for a problem it already printed.
var errUsage = errors.New("usage")

// parseArgs parses flags and refuses positional arguments: a stray word is a
// typo (or a flag without its dashes), never something to ignore. Problems
// go to the flag set's output.
func parseArgs(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q (flags are written --name value; --help lists them)\n", fs.Name(), fs.Arg(0))
		return errUsage
	}
	return nil
}
