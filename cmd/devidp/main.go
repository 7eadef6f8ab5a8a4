// Command devidp runs the development identity provider: a client credentials token endpoint
// at /oauth/token, plus /healthz and /stats, for trying tokenbroker with nothing else installed.
//
//	devidp --listen 127.0.0.1:9000 --client demo:demo-secret --lifetime 1h
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/devidp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stderr, nil)
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, "devidp:", err)
		os.Exit(1)
	}
}

// clientFlags collects repeated --client id:secret values.
type clientFlags map[string]string

func (c clientFlags) String() string {
	ids := make([]string, 0, len(c))
	for id := range c {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return strings.Join(ids, ",")
}

func (c clientFlags) Set(v string) error {
	id, secret, ok := strings.Cut(v, ":")
	if !ok || id == "" || secret == "" {
		return errors.New("want id:secret")
	}
	c[id] = secret
	return nil
}

// run serves until ctx ends, then shuts down gracefully. ready, if set, is told the address
// being served once the listener is open.
func run(ctx context.Context, args []string, stderr io.Writer, ready func(net.Addr)) error {
	fs := flag.NewFlagSet("devidp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:9000", "address to listen on")
	lifetime := fs.Duration("lifetime", devidp.DefaultLifetime, "lifetime (expires_in) of issued tokens")
	clients := clientFlags{}
	fs.Var(clients, "client", "client as id:secret; repeatable (default demo:demo-secret)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if len(clients) == 0 {
		clients["demo"] = "demo-secret"
	}

	logger := log.New(stderr, "devidp: ", log.LstdFlags)
	idp := devidp.New(devidp.Options{Clients: clients, Lifetime: *lifetime, Logf: logger.Printf})

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           idp,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          logger,
	}
	logger.Printf("listening on http://%s (token endpoint /oauth/token, clients %s, lifetime %s)",
		ln.Addr(), clients, *lifetime)
	if ready != nil {
		ready(ln.Addr())
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	logger.Printf("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return err
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
