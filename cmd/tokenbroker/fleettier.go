package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/budget"
	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
)

// fleetTier is cache.redis: the Redis the replicas of a fleet share tokens
// (cache.Shared) and mint counts (budget.Counter) through. The token cache
// and the budget meter hold the fleetTier itself, never a Redis client, so
// a new cache.redis takes effect at once: the new client is built first,
// every call from then on goes to it, and the old client closes when the
// last call still using it (a held fleet mint lock included) is done. Its
// circuit breaker is not carried over: the new client's starts closed.
//
// Without cache.redis every call answers "no fleet": the cache mints
// locally and budgets count in memory, as a single process does.
type fleetTier struct {
	log      *zap.Logger
	reg      prometheus.Registerer
	meter    *cache.L2Metrics // one for every client; registered with the first
	metrics  *laterRegistry
	register sync.Once
	local    *budget.Memory // mint counts in this process, kept across clients
	owed     owedMints      // mints Redis missed, replayed when it answers

	cur  atomic.Pointer[redisClient] // nil: no shared tier
	keep atomic.Int64                // how long Redis keeps mint counts (the longest budget window)
	cfg  *config.Redis               // in force; apply and commit run under the reload lock
}

// errNoFleet is the shared tier's answer without cache.redis: like any
// error from it, it makes the cache mint locally.
var errNoFleet = errors.New("no shared cache configured")

func newFleetTier(log *zap.Logger, reg prometheus.Registerer) *fleetTier {
	later := newLaterRegistry(reg)
	return &fleetTier{log: log, reg: reg, meter: cache.NewL2Metrics(later), metrics: later, local: budget.NewMemory()}
}

func (f *fleetTier) start(cfg *config.Config) error { return now(f.apply(cfg)) }

func (f *fleetTier) apply(cfg *config.Config) (change, error) {
	keep := budgetKeep(cfg)
	setKeep := func() { f.keep.Store(int64(keep)) }
	next := cfg.Cache.Redis
	if reflect.DeepEqual(next, f.cfg) {
		return change{commit: setKeep}, nil
	}
	var c *redisClient
	if next != nil {
		r, err := newRedis(next, f.log, f.meter)
		if err != nil {
			return change{}, err
		}
		c = &redisClient{Redis: r}
	}
	var old *redisClient
	return change{
		commit: func() {
			setKeep()
			if c != nil {
				f.register.Do(func() {
					if err := f.metrics.swapInto(f.reg, nil); err != nil {
						f.log.Error("shared cache metrics not registered", zap.Error(err))
					}
				})
				f.meter.BreakerReset()
			}
			old = f.cur.Swap(c)
			f.cfg = next
		},
		retire: func() {
			if old != nil {
				old.retire()
			}
		},
		discard: func() {
			if c != nil {
				_ = c.Close()
			}
		},
	}, nil
}

// stop closes the client once the calls still using it are done; the token
// cache, which makes them, has stopped before.
func (f *fleetTier) stop(context.Context) {
	if c := f.cur.Swap(nil); c != nil {
		c.retire()
	}
}

// budgetKeep is how long the fleet's mint counts must stay in Redis: the
// status page's 30 days, or the longest budget window if longer.
func budgetKeep(cfg *config.Config) time.Duration {
	keep := budget.Keep
	for _, c := range cfg.Credentials {
		keep = max(keep, c.Budget.Per.D())
	}
	for _, u := range cfg.Broker.Upstreams {
		keep = max(keep, u.Budget.Per.D())
	}
	return keep
}

// redisClient is one cache.redis client and the calls using it.
type redisClient struct {
	*cache.Redis
	mu      sync.Mutex // guards the fields below
	users   int        // calls in progress and fleet locks held
	retired bool       // replaced: no new calls; closes when users reaches 0
}

// acquire returns the client in force for one call, nil without one.
func (f *fleetTier) acquire() *redisClient {
	for {
		c := f.cur.Load()
		if c == nil {
			return nil
		}
		c.mu.Lock()
		if !c.retired {
			c.users++
			c.mu.Unlock()
			return c
		}
		c.mu.Unlock() // replaced since Load: the next Load sees its successor
	}
}

func (c *redisClient) release() {
	c.mu.Lock()
	c.users--
	closing := c.retired && c.users == 0
	c.mu.Unlock()
	if closing {
		_ = c.Close()
	}
}

func (c *redisClient) retire() {
	c.mu.Lock()
	c.retired = true
	closing := c.users == 0
	c.mu.Unlock()
	if closing {
		_ = c.Close()
	}
}

// Load implements cache.Shared.
func (f *fleetTier) Load(ctx context.Context, key cache.Key) (credential.Token, bool, error) {
	c := f.acquire()
	if c == nil {
		return credential.Token{}, false, errNoFleet
	}
	defer c.release()
	return c.Load(ctx, key)
}

// Store implements cache.Shared.
func (f *fleetTier) Store(ctx context.Context, key cache.Key, tok credential.Token, ttl time.Duration) error {
	c := f.acquire()
	if c == nil {
		return errNoFleet
	}
	defer c.release()
	return c.Store(ctx, key, tok, ttl)
}

// Offer implements cache.Shared.
func (f *fleetTier) Offer(ctx context.Context, key cache.Key, tok credential.Token, ttl time.Duration, keep func(credential.Token) bool) (bool, credential.Token, error) {
	c := f.acquire()
	if c == nil {
		return false, credential.Token{}, errNoFleet
	}
	defer c.release()
	return c.Offer(ctx, key, tok, ttl, keep)
}

// Drop implements cache.Shared.
func (f *fleetTier) Drop(ctx context.Context, key cache.Key, match func(credential.Token) bool) (bool, error) {
	c := f.acquire()
	if c == nil {
		return false, errNoFleet
	}
	defer c.release()
	return c.Drop(ctx, key, match)
}

// Lock implements cache.Shared. A held lock keeps its client open until
// released, so the lock is freed where it was taken.
func (f *fleetTier) Lock(ctx context.Context, key cache.Key) (func(), bool, error) {
	c := f.acquire()
	if c == nil {
		return nil, false, errNoFleet
	}
	release, held, err := c.Lock(ctx, key)
	if !held || err != nil {
		c.release()
		return release, held, err
	}
	return func() { release(); c.release() }, true, nil
}

// LockWait implements cache.Shared.
func (f *fleetTier) LockWait() time.Duration {
	if c := f.cur.Load(); c != nil {
		return c.LockWait()
	}
	return 0
}

// Add implements budget.Counter: in Redis for the fleet and in memory,
// which answers while Redis is away (as budget.Tiered). A mint Redis missed
// is owed to it and replayed once it answers again, so the fleet's counts
// include the mints made during an outage; only a failure of both stores is
// an error.
func (f *fleetTier) Add(ctx context.Context, name string, at time.Time) error {
	c := f.acquire()
	if c == nil {
		return f.local.Add(ctx, name, at)
	}
	defer c.release()
	errL := f.local.Add(ctx, name, at)
	mc, e := c.MintCounter(time.Duration(f.keep.Load())), cache.NewEvent(at)
	if err := mc.Record(ctx, name, e); err != nil {
		f.owed.owe(name, e, f.log)
		return errL
	}
	f.repay(ctx, mc)
	return nil
}

// Count implements budget.Counter: Redis's count, or this process's while
// Redis fails. Mints owed to Redis are replayed first.
func (f *fleetTier) Count(ctx context.Context, name string, since, until time.Time) (int64, error) {
	c := f.acquire()
	if c == nil {
		return f.local.Count(ctx, name, since, until)
	}
	defer c.release()
	mc := c.MintCounter(time.Duration(f.keep.Load()))
	f.repay(ctx, mc)
	return budget.Tiered{Shared: mc, Local: f.local}.Count(ctx, name, since, until)
}

// repay replays up to repayNames names' owed mints into mc, one round trip
// each, stopping at the first failure (they stay owed).
func (f *fleetTier) repay(ctx context.Context, mc *cache.MintCounter) {
	batch := f.owed.take(repayNames)
	for i, b := range batch {
		if err := mc.Record(ctx, b.name, b.events...); err != nil {
			for _, b := range batch[i:] {
				f.owed.giveBack(b.name, b.events)
			}
			return
		}
	}
	if len(batch) > 0 {
		f.owed.repaid(f.log)
	}
}

const (
	// maxOwed bounds the mints kept to replay (~80 B each: ~1.6 MB); an
	// outage long and busy enough to fill it loses the rest from the
	// fleet's counts (each replica still counts its own), and says so.
	maxOwed = 20_000
	// repayNames bounds the names replayed per budget call, so a call
	// right after an outage waits for a few more round trips, not all.
	repayNames = 8
)

// owedMints are mints recorded in this process only because Redis failed.
type owedMints struct {
	mu      sync.Mutex // guards the fields below
	byName  map[string][]cache.Event
	n       int   // events in byName
	dropped int64 // past maxOwed since the last time all were repaid
	owing   bool  // something was owed since the last time all were repaid
}

type owedName struct {
	name   string
	events []cache.Event
}

func (o *owedMints) owe(name string, e cache.Event, log *zap.Logger) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n >= maxOwed {
		if o.dropped++; o.dropped == 1 {
			log.Warn("the shared tier has been away for more mints than are kept to replay; the fleet's budget counts will miss some",
				zap.Int("kept", maxOwed))
		}
		return
	}
	if o.byName == nil {
		o.byName = make(map[string][]cache.Event)
	}
	o.byName[name] = append(o.byName[name], e)
	o.n++
	o.owing = true
}

// take removes and returns up to k names' owed mints.
func (o *owedMints) take(k int) []owedName {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n == 0 {
		return nil
	}
	var out []owedName
	for name, evs := range o.byName {
		if len(out) == k {
			break
		}
		out = append(out, owedName{name, evs})
		delete(o.byName, name)
		o.n -= len(evs)
	}
	return out
}

// giveBack owes evs again after a replay failed.
func (o *owedMints) giveBack(name string, evs []cache.Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.byName == nil {
		o.byName = make(map[string][]cache.Event)
	}
	o.byName[name] = append(o.byName[name], evs...)
	o.n += len(evs)
}

// repaid follows a replay; once nothing is owed it logs the replay, and
// how many mints were lost to the bound.
func (o *owedMints) repaid(log *zap.Logger) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n != 0 || !o.owing {
		return
	}
	o.owing = false
	if o.dropped > 0 {
		log.Warn("mints made while the shared tier was away replayed into it, but not all were kept",
			zap.Int64("lost", o.dropped))
	} else {
		log.Info("mints made while the shared tier was away replayed into it")
	}
	o.dropped = 0
	o.byName = nil // its buckets could be sized for a long outage
}

// newRedis builds a client for cfg. It does not need Redis to be up: one
// that is down is only logged, and the cache works from L1 and local mints
// until it comes back.
func newRedis(cfg *config.Redis, log *zap.Logger, meter *cache.L2Metrics) (*cache.Redis, error) {
	sealer, err := cache.NewSealer(cfg.EncryptionKeys)
	if err != nil {
		return nil, fmt.Errorf("cache.redis.encryption_keys_file: %w", err)
	}
	var tlsCfg *tls.Config
	if cfg.TLS.Enabled {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.TLS.ServerName}
		if cfg.TLS.CAFile != "" {
			pem, err := os.ReadFile(cfg.TLS.CAFile)
			if err != nil {
				return nil, fmt.Errorf("cache.redis.tls.ca_file: %w", err)
			}
			tlsCfg.RootCAs = x509.NewCertPool()
			if !tlsCfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, errors.New("cache.redis.tls.ca_file: no PEM certificate")
			}
		}
	}
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
		return nil, fmt.Errorf("cache.redis: %w", err)
	}
	fields := []zap.Field{zap.Strings("addrs", cfg.Addrs), zap.String("master_name", cfg.MasterName),
		zap.Int("encryption_keys", len(cfg.EncryptionKeys))}
	if err := r.Ping(context.Background()); err != nil {
		log.Warn("shared cache not reachable; minting locally until it is", append(fields, zap.Error(err))...)
	} else {
		log.Info("shared cache", fields...)
	}
	return r, nil
}
