package main

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"time"

	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/telemetry"
)

// tracingFlush bounds how long shutdown waits for queued spans: an
// unreachable collector must not hold the process up.
const tracingFlush = 5 * time.Second

// tracer is the tracing: section with the OTEL_* variables: OpenTelemetry
// tracing, on when either asks for it. It starts first, before anything
// that traces is built (the Redis client, filters), and stops last, since
// closing the rest may still end spans. The tracer provider is global to the
// process, so a changed section applies only after a restart.
type tracer struct {
	log *zap.Logger
	cfg *config.Tracing    // in force
	t   *telemetry.Tracing // nil when off
}

func (c *tracer) start(cfg *config.Config) error {
	st, on, err := telemetry.Resolve(cfg.Tracing, os.Getenv)
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	c.cfg = cfg.Tracing
	if !on {
		return nil
	}
	c.t, err = telemetry.Start(context.Background(), st, c.log)
	return err
}

func (c *tracer) apply(cfg *config.Config) (change, error) {
	if reflect.DeepEqual(cfg.Tracing, c.cfg) {
		return change{}, nil
	}
	cfg.Tracing = c.cfg // the running value stays in force
	return change{restart: []string{"tracing"}}, nil
}

// stop flushes queued spans (bounded by tracingFlush) and turns tracing off.
func (c *tracer) stop(context.Context) {
	if c.t == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), tracingFlush)
	defer cancel()
	if err := c.t.Shutdown(ctx); err != nil {
		c.log.Warn("tracing: queued spans not flushed at shutdown", zap.Error(err))
	}
	c.t = nil
}
