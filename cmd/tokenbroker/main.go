// Command tokenbroker is an Envoy ext_authz server that injects cached
// machine-to-machine tokens into outbound requests.
//
//	tokenbroker serve    --config FILE   run the servers until SIGTERM/SIGINT
//	tokenbroker validate --config FILE   check a configuration file
//	tokenbroker check    --grpc ADDR     ask a running tokenbroker, as Envoy would
//	tokenbroker health   --grpc ADDR     exit 0 when a running tokenbroker serves
//	tokenbroker invalidate NAME --admin ADDR   drop a credential's cached tokens
//	tokenbroker version
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

const usage = `usage: tokenbroker <command> [flags]

commands:
  serve    --config FILE   run the ext_authz and admin servers until SIGTERM/SIGINT
  validate --config FILE   exit 0 for a valid file; else print FILE:LINE: field: problem
  check    --grpc ADDR     send one Check, as Envoy would, and print the answer
  health   [--grpc ADDR | --http URL]   exit 0 when a running tokenbroker serves (container healthchecks)
  invalidate NAME --admin ADDR   drop a credential's cached tokens so the next request mints
  version                  print the version

common flags: --log-level debug|info|warn|error  --log-format json|console
`

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
	switch cmd {
	case "serve":
		return cmdServe(args, stderr)
	case "validate":
		return cmdValidate(args, stdout, stderr)
	case "check":
		return cmdCheck(args, stdout, stderr)
	case "health":
		return cmdHealth(args, stdout, stderr)
	case "invalidate":
		return cmdInvalidate(args, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "tokenbroker", buildVersion())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "tokenbroker: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
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

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("tokenbroker "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}
