package main

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
)

// tokenCache is cache.*: the token cache every Check, forward-auth and
// broker request is answered from. A new max_tokens, expiry_margin or
// refresh_ahead applies to the next lookup; the cached tokens stay (a new
// size rebuilds L1 and each slot restores its token, without minting).
// cache.redis is the fleet tier's.
type tokenCache struct {
	*cache.Tokens // nil until start

	log     *zap.Logger
	reg     prometheus.Registerer
	fleet   *fleetTier
	mayMint func(cache.Key) error
}

func settingsOf(cfg *config.Config) cache.Settings {
	return cache.Settings{MaxTokens: cfg.Cache.MaxTokens, ExpiryMargin: cfg.Cache.ExpiryMargin.D(), RefreshAhead: cfg.Cache.RefreshAhead}
}

func (t *tokenCache) start(cfg *config.Config) error {
	s := settingsOf(cfg)
	tokens, err := cache.New(cache.Options{
		MaxTokens:    s.MaxTokens,
		ExpiryMargin: s.ExpiryMargin,
		RefreshAhead: s.RefreshAhead,
		MayMint:      t.mayMint,
		Logger:       t.log,
		Meter:        cache.NewMetrics(t.reg),
		L2:           t.fleet,
		L2Meter:      t.fleet.meter,
	})
	if err != nil {
		return err
	}
	t.Tokens = tokens
	return nil
}

func (t *tokenCache) apply(cfg *config.Config) (change, error) {
	s := settingsOf(cfg)
	if s == t.Settings() {
		return change{}, nil
	}
	return change{commit: func() {
		if err := t.Reconfigure(s); err != nil { // a size the config's bounds allow is never refused; kept for the API's error
			t.log.Error("cache settings not applied", zap.Error(err))
		}
	}}, nil
}

// stop ends background refreshes and releases the cache.
func (t *tokenCache) stop(context.Context) { t.Close() }
