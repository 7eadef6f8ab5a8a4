package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/telemetry"
)

// tracingFlush bounds how long shutdown waits for queued spans: an
// unreachable collector must not hold the process up.
const tracingFlush = 5 * time.Second

// startTracing turns OpenTelemetry tracing on when the OTEL_* variables or
// the tracing: section ask for it; nil means off. It runs before anything
// that traces is built (the Redis client, filters).
func startTracing(cfg *config.Config, log *zap.Logger) (*telemetry.Tracing, error) {
	st, on, err := telemetry.Resolve(cfg.Tracing, os.Getenv)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	if !on {
		return nil, nil
	}
	return telemetry.Start(context.Background(), st, log)
}

// stopTracing flushes queued spans (bounded) and turns tracing off.
func (s *server) stopTracing() {
	if s.tracing == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), tracingFlush)
	defer cancel()
	if err := s.tracing.Shutdown(ctx); err != nil {
		s.log.Warn("tracing: queued spans not flushed at shutdown", zap.Error(err))
	}
	s.tracing = nil
}
