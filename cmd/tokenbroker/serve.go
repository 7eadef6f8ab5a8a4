package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/config"
)

func cmdServe(args []string, stderr io.Writer) int {
	fs := newFlagSet("serve", stderr)
	path := fs.String("config", "", "configuration file (required)")
	var lf logFlags
	lf.register(fs)
	if err := parseArgs(fs, args); err != nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "tokenbroker serve: --config FILE is required")
		return 2
	}
	log, err := lf.logger(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "tokenbroker serve: %v\n", err)
		return 2
	}
	defer func() { _ = log.Sync() }()
	// Watch before reading, so no edit made after the read is missed; a
	// watch that cannot start leaves SIGHUP as the way to reload.
	cw, err := watchConfig(*path)
	if err != nil {
		log.Warn("configuration file not watched; reload with SIGHUP", zap.Error(err))
	} else {
		defer cw.close() // on early returns; closing twice is harmless
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printConfigErrors(stderr, *path, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	a, err := start(cfg, log)
	if err != nil {
		log.Error("start failed", zap.Error(err))
		return 1
	}
	followLiveHeap() // the GC goal follows the heap the traffic builds (gcgoal.go)
	reloadCtx, stopReload := context.WithCancel(ctx)
	reloading := make(chan struct{})
	go func() {
		defer close(reloading)
		a.reloadLoop(reloadCtx, *path, cw, hup, nil)
	}()
	<-ctx.Done()
	log.Info("shutting down", zap.String("signal", context.Cause(ctx).Error()))
	stopReload()
	<-reloading // no reload may swap the configuration while shutting down
	a.stop()
	return 0
}
