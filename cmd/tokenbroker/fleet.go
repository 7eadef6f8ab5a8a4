package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
)

// sharedTier builds the Redis L2 from cache.redis; nil, nil when it is not
// configured. A Redis that is down at start is only logged: the cache works
// from L1 and local mints until it comes back.
func sharedTier(cfg *config.Redis, log *zap.Logger, reg prometheus.Registerer) (*cache.Redis, *cache.L2Metrics, error) {
	if cfg == nil {
		return nil, nil, nil
	}
	sealer, err := cache.NewSealer(cfg.EncryptionKeys)
	if err != nil {
		return nil, nil, fmt.Errorf("cache.redis.encryption_keys_file: %w", err)
	}
	var tlsCfg *tls.Config
	if cfg.TLS.Enabled {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.TLS.ServerName}
		if cfg.TLS.CAFile != "" {
			pem, err := os.ReadFile(cfg.TLS.CAFile)
			if err != nil {
				return nil, nil, fmt.Errorf("cache.redis.tls.ca_file: %w", err)
			}
			tlsCfg.RootCAs = x509.NewCertPool()
			if !tlsCfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, nil, errors.New("cache.redis.tls.ca_file: no PEM certificate")
			}
		}
	}
	meter := cache.NewL2Metrics(reg)
	r, err := cache.NewRedis(cache.RedisOptions{
		Addrs:      cfg.Addrs,
		MasterName: cfg.MasterName,
		Username:   cfg.Username,
		Password:   cfg.Password.Reveal(),
		DB:         cfg.DB,
		TLS:        tlsCfg,
		KeyPrefix:  cfg.KeyPrefix,
		Sealer:     sealer,
		Timeout:    cfg.Timeout.D(),
		LockTTL:    cfg.LockTTL.D(),
		Logger:     log,
		Meter:      meter,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("cache.redis: %w", err)
	}
	fields := []zap.Field{zap.Strings("addrs", cfg.Addrs), zap.String("master_name", cfg.MasterName),
		zap.Int("encryption_keys", len(cfg.EncryptionKeys))}
	if err := r.Ping(context.Background()); err != nil {
		log.Warn("shared cache not reachable at start; minting locally until it is", append(fields, zap.Error(err))...)
	} else {
		log.Info("shared cache", fields...)
	}
	return r, meter, nil
}
