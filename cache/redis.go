package cache

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/credential"
	"github.com/tokenbroker/tokenbroker/telemetry"
)

// Shared is a token store shared by a fleet of caches (L2). Tokens calls it
// only on a miss or a refresh, never on a hit. Every method must return
// promptly (bounded by its own timeout) and an error means "unavailable":
// the cache then mints locally rather than fail.
type Shared interface {
	// Load returns key's token; ok is false on a miss (including a value
	// that cannot be decrypted).
	Load(ctx context.Context, key Key) (tok credential.Token, ok bool, err error)
	// Store saves tok under key for ttl.
	Store(ctx context.Context, key Key, tok credential.Token, ttl time.Duration) error
	// Offer saves tok under key for ttl unless key holds a readable token
	// that keep approves, atomically (a compare-and-set): of offers racing
	// for one key one wins, so they converge. It returns the token kept
	// when it did not store.
	Offer(ctx context.Context, key Key, tok credential.Token, ttl time.Duration, keep func(credential.Token) bool) (stored bool, kept credential.Token, err error)
	// Drop deletes key's token if it is a readable one that match
	// approves, atomically (a compare-and-delete: a token another replica
	// stored meanwhile stays). It reports whether it deleted one.
	Drop(ctx context.Context, key Key, match func(credential.Token) bool) (dropped bool, err error)
	// Lock tries once to take key's fleet mint lock. When held, release must
	// be called (it frees the lock only if this caller still owns it).
	Lock(ctx context.Context, key Key) (release func(), held bool, err error)
	// LockWait is the lock's lifetime: a replica that lost the lock keeps
	// polling for the winner's token and contending for the lock, which
	// frees itself after this long if its holder died.
	LockWait() time.Duration
}

// RedisOptions configure a Redis shared tier.
type RedisOptions struct {
	// Addrs: one address is a single node, several a cluster; with
	// MasterName they are Sentinels (go-redis UniversalClient rules).
	Addrs      []string
	MasterName string
	Username   string
	Password   string
	DB         int
	TLS        *tls.Config // nil: plain TCP

	KeyPrefix string        // prepended to every key, e.g. "tokenbroker:"
	Sealer    *Sealer       // encrypts every value (required)
	Timeout   time.Duration // per operation (default 50ms)
	LockTTL   time.Duration // fleet mint lock lifetime (default 10s); a waiter contends again after it

	FailureThreshold int           // consecutive failures that open the breaker (default 5)
	Cooldown         time.Duration // open time before a probe (default 5s)

	Now    func() time.Time // breaker clock seam; default time.Now
	Logger *zap.Logger
	Meter  *L2Metrics

	// topologyEvery overrides the Cluster slot map's periodic re-read
	// (tests: negative turns it off, to hold a stale map on purpose).
	topologyEvery time.Duration
}

// Redis is the Shared tier backed by Redis, Redis Cluster or Sentinel.
// Values are sealed with AES-256-GCM; key names are keyed hashes of the
// credential identity (see Names), so Redis holds no token, secret or
// client id in clear, and cannot confirm a guessed one.
type Redis struct {
	opts    RedisOptions
	client  redis.UniversalClient
	cluster *redis.ClusterClient // client when it is a Redis Cluster; nil otherwise
	// br has one circuit breaker per kind of operation. With one breaker, a
	// success anywhere (the mint counter on a live master) reset the
	// failures of token reads going to a dead master, and it never opened.
	br      [numOps]*breaker
	gaugeMu sync.Mutex // serialises the breaker gauge's updates

	// ctx ends at Close: it ends the topology refresher and its re-reads.
	ctx    context.Context
	cancel context.CancelFunc
	// topo serialises slot map re-reads (a one-slot semaphore a waiter can
	// give up on); topoAt, guarded by it, is when the last one ended.
	topo   chan struct{}
	topoAt time.Time
	wg     sync.WaitGroup
	// nameKeys name Redis keys: DeriveKey(namesPurpose) of every encryption
	// key, the encrypting key's first. New keys are named with the first;
	// the others find what replicas still on an older key wrote.
	nameKeys [][]byte

	unreadable sync.Map // Redis key -> struct{}: logged once
}

// namesPurpose is the HKDF purpose of the key-naming keys.
const namesPurpose = "redis key names v1"

// opKind is the kind of a Redis operation, for the per-kind breakers.
type opKind int

const (
	opGet   opKind = iota // token reads
	opSet                 // token writes
	opLock                // fleet mint lock and its release
	opCount               // budget counts (the mint counter)
	numOps
)

func (k opKind) String() string { return [...]string{"get", "set", "lock", "count"}[k] }

// topologyEvery is how often a Redis Cluster client re-reads the slot map
// even when nothing failed. After a failover a replica that had nothing to
// ask Redis (an idle one, or one answering from its own cache) would
// otherwise send its first command to the dead master: go-redis reloads the
// map only on MOVED/ASK/READONLY, which a dead master never answers, or
// once a minute. One CLUSTER SLOTS per replica this often costs Redis
// nothing measurable.
const topologyEvery = 2 * time.Second

// topologyGap is the least time between two slot map re-reads asked for by
// failed commands: during an outage every L2 call for the dead master's
// slots fails, and one CLUSTER SLOTS answers them all.
const topologyGap = 100 * time.Millisecond

// releaseScript deletes the lock only if it still holds our owner value, so a
// replica whose lock expired cannot free another replica's lock.
var releaseScript = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`)

// extendScript renews the lock's lifetime only if it still holds our owner
// value: a holder whose lock expired and was taken cannot take it back.
var extendScript = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("pexpire", KEYS[1], ARGV[2]) else return 0 end`)

// NewRedis builds the Redis tier. It does not connect: a Redis that is down
// at start is like one that fails later (local mints until it is back).
func NewRedis(opts RedisOptions) (*Redis, error) {
	if len(opts.Addrs) == 0 {
		return nil, errors.New("redis: no address")
	}
	if opts.Sealer == nil {
		return nil, errors.New("redis: no encryption key")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 50 * time.Millisecond
	}
	if opts.LockTTL <= 0 {
		opts.LockTTL = 10 * time.Second
	}
	if opts.FailureThreshold <= 0 {
		opts.FailureThreshold = 5
	}
	if opts.Cooldown <= 0 {
		opts.Cooldown = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Meter == nil {
		opts.Meter = NewL2Metrics(nil)
	}
	quietOnce.Do(func() { redis.SetLogger(zapPrintf{opts.Logger}) })
	r := &Redis{opts: opts, nameKeys: opts.Sealer.DerivedKeys(namesPurpose), topo: make(chan struct{}, 1)}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.client = redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:                 opts.Addrs,
		MasterName:            opts.MasterName,
		Username:              opts.Username,
		Password:              opts.Password,
		DB:                    opts.DB,
		TLSConfig:             opts.TLS,
		DialTimeout:           opts.Timeout,
		ReadTimeout:           opts.Timeout,
		WriteTimeout:          opts.Timeout,
		PoolTimeout:           opts.Timeout,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1, // a retry would double the time a Check can wait on Redis
		DialerRetries:         1,
		DialerRetryTimeout:    opts.Timeout,
		DisableIdentity:       true,
		// Fewer round trips when a connection is (re)made inside a Check's
		// budget; those notifications are for managed-Redis maintenance.
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	if err := telemetry.InstrumentRedis(r.client); err != nil { // one span per command while tracing is on
		opts.Logger.Warn("redis commands not traced", zap.Error(err))
	}
	for k := range numOps {
		r.br[k] = &breaker{
			threshold: opts.FailureThreshold,
			cooldown:  opts.Cooldown,
			now:       opts.Now,
			onChange: func(from, to breakerState, err error) {
				r.gaugeMu.Lock()
				opts.Meter.breakerChanged(to, r.worstBreaker())
				r.gaugeMu.Unlock()
				fields := []zap.Field{zap.Stringer("operation", k), zap.Stringer("from", from), zap.Stringer("to", to)}
				if err != nil {
					fields = append(fields, zap.Error(err))
				}
				if to == breakerOpen {
					opts.Logger.Warn("shared cache unavailable: using local cache and local mints", append(fields, zap.Duration("cooldown", opts.Cooldown))...)
				} else {
					opts.Logger.Info("shared cache breaker state changed", fields...)
				}
			},
		}
	}
	if c, ok := r.client.(*redis.ClusterClient); ok {
		r.cluster = c
		if opts.topologyEvery >= 0 {
			r.wg.Go(r.refreshTopology)
		}
	}
	return r, nil
}

// worstBreaker is the most open state among the breakers (the state gauge).
func (r *Redis) worstBreaker() breakerState {
	worst := breakerClosed
	for _, b := range r.br {
		worst = max(worst, b.current())
	}
	return worst
}

// refreshTopology re-reads the cluster's slot map every topologyEvery.
func (r *Redis) refreshTopology() {
	every := cmp.Or(r.opts.topologyEvery, topologyEvery)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			ctx, done := context.WithTimeout(r.ctx, every/2)
			r.reloadTopology(ctx, 0)
			done()
		case <-r.ctx.Done():
			return
		}
	}
}

// reloadTopology re-reads the cluster's slot map now and returns when it
// has (or ctx ended), unless a re-read ended less than gap ago: then the
// map that one read is current enough. Concurrent callers wait for the one
// re-read under way rather than start their own.
//
// It is synchronous on purpose: go-redis's ReloadState only schedules a
// re-read in the background, so the command that found the dead master
// could not use its answer, and minted locally instead.
func (r *Redis) reloadTopology(ctx context.Context, gap time.Duration) {
	select {
	case r.topo <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-r.topo }()
	if gap > 0 && time.Since(r.topoAt) < gap {
		return
	}
	// ForEachMaster reads CLUSTER SLOTS from a live node before it runs
	// (falling back to the map it has when no node answers); the function
	// itself has nothing to do.
	_ = r.cluster.ForEachMaster(ctx, func(context.Context, *redis.Client) error { return nil })
	r.topoAt = time.Now()
}

// masterAddr is the address of the master the client sends key's commands
// to now ("" when the map has no master for it).
func (r *Redis) masterAddr(ctx context.Context, key string) string {
	c, err := r.cluster.MasterForKey(ctx, key)
	if err != nil {
		return ""
	}
	return c.Options().Addr
}

// quietOnce routes go-redis's own (process-wide) log lines, such as every
// failed dial while Redis is down, to debug level: the breaker logs the
// state changes that matter.
var quietOnce sync.Once

type zapPrintf struct{ log *zap.Logger }

func (z zapPrintf) Printf(_ context.Context, format string, v ...any) {
	z.log.Debug("go-redis: " + fmt.Sprintf(format, v...))
}

// Close stops the topology refresher and closes the Redis connections.
func (r *Redis) Close() error {
	r.cancel()
	r.wg.Wait()
	return r.client.Close()
}

// LockWait implements Shared.
func (r *Redis) LockWait() time.Duration { return r.opts.LockTTL }

// Names returns the Redis key names for id (a credential identity): its
// token and its fleet mint lock.
//
// A name is key_prefix + kind + ":{" + tag + "}". The tag is an HMAC-SHA256
// (128 bits kept) of id under a key derived from the encrypting key, so
// someone who reads Redis but holds no encryption key cannot confirm a
// guessed credential, client id or configuration, nor link a name to one.
// The braces make tag the Redis Cluster hash tag: a credential's token and
// lock share one slot, so one master holds both and they fail over together.
// Rotating the encrypting key renames the keys: Load still finds tokens
// under the names of the other configured keys (see Load).
func (r *Redis) Names(id string) (token, lock string) { return r.names(0, id) }

func (r *Redis) names(i int, id string) (token, lock string) {
	tag := "{" + keyedTag(r.nameKeys[i], "l2", id) + "}"
	return r.opts.KeyPrefix + "token:" + tag, r.opts.KeyPrefix + "lock:" + tag
}

// keyedTag is the hex of the first 128 bits of HMAC-SHA256(key, kind NUL
// input): collisions among even millions of names are out of reach, and the
// key names stay short.
func keyedTag(key []byte, kind, input string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(kind))
	m.Write([]byte{0})
	m.Write([]byte(input))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// do runs one Redis operation of kind k on key under that kind's breaker
// and the per-operation timeout. redis.Nil (a miss, or a lock held
// elsewhere) counts as an answer.
//
// On a Redis Cluster a failure re-reads the slot map at once, within the
// same timeout, and when key's slot has moved to another master since (the
// failed master's replica was promoted) runs op once more there. A dead
// master never answers MOVED, and go-redis re-reads the map only on MOVED
// or every minute, so without this a replica whose map predates a
// failover (one idle through it) failed its first call after it and minted
// on its own, though the fleet's token and lock were on the new master.
// The breaker sees only the final outcome.
func (r *Redis) do(ctx context.Context, k opKind, key string, op func(ctx context.Context) error) error {
	br := r.br[k]
	if !br.allow() {
		return ErrBreakerOpen
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	var was string
	if r.cluster != nil {
		was = r.masterAddr(ctx, key)
	}
	err := op(ctx)
	if err != nil && !errors.Is(err, redis.Nil) && r.cluster != nil {
		err = r.retryMoved(ctx, k, key, was, err, op)
	}
	if errors.Is(err, redis.Nil) {
		br.done(nil)
		return err
	}
	br.done(err)
	return err
}

// retryMoved re-reads the slot map after op failed with err on master was,
// and runs op again when key's slot is now on another master. Every op is
// safe to run twice: token reads and writes, the compare-and-set offer, the
// lock (a SET NX that did land before the master died makes the retry see
// the lock taken: a wait, not a second mint) and its owner-checked release,
// and mint counts (each event is a sorted-set member unique to it). It
// returns op's final error.
func (r *Redis) retryMoved(ctx context.Context, k opKind, key, was string, err error, op func(ctx context.Context) error) error {
	if ctx.Err() != nil || isTimeout(err) {
		// No time left to re-read the map here: have it re-read in the
		// background for the next call.
		r.cluster.ReloadState(context.Background())
		return err
	}
	r.reloadTopology(ctx, topologyGap)
	now := r.masterAddr(ctx, key)
	if now == "" || now == was || ctx.Err() != nil {
		return err
	}
	r.opts.Logger.Debug("shared cache: slot moved to another master; trying there",
		zap.Stringer("operation", k), zap.String("from", was), zap.String("to", now), zap.Error(err))
	return op(ctx)
}

// isTimeout reports a command that ran out of time (its context or a
// socket deadline).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// Load implements Shared. It looks under the encrypting key's name first
// and, while a key rotation is under way (more than one key configured),
// under the names the other keys give, so a replica that has moved to a new
// key still finds the token a replica on the old key wrote.
func (r *Redis) Load(ctx context.Context, key Key) (credential.Token, bool, error) {
	result := "miss"
	for i := range r.nameKeys {
		name, _ := r.names(i, key.ID)
		tok, res, err := r.load(ctx, key, name)
		if err != nil {
			r.opts.Meter.lookup(key.Name, "error")
			return credential.Token{}, false, err
		}
		if res == "hit" {
			r.opts.Meter.lookup(key.Name, "hit")
			return tok, true, nil
		}
		if res == "unreadable" {
			result = res
		}
	}
	r.opts.Meter.lookup(key.Name, result)
	return credential.Token{}, false, nil
}

// load reads and opens one name: result is hit, miss or unreadable.
func (r *Redis) load(ctx context.Context, key Key, name string) (tok credential.Token, result string, err error) {
	var b []byte
	err = r.do(ctx, opGet, name, func(ctx context.Context) (err error) {
		b, err = r.client.Get(ctx, name).Bytes()
		return err
	})
	switch {
	case errors.Is(err, redis.Nil):
		return credential.Token{}, "miss", nil
	case err != nil:
		return credential.Token{}, "", fmt.Errorf("shared cache: get: %w", err)
	}
	tok, err = r.opts.Sealer.Open(name, b)
	if err != nil {
		if _, seen := r.unreadable.LoadOrStore(name, struct{}{}); !seen {
			r.opts.Logger.Warn("shared cache value unreadable (wrong encryption key, corrupt, or an older format): treated as a miss",
				zap.String("credential", key.Name))
		}
		return credential.Token{}, "unreadable", nil
	}
	return tok, "hit", nil
}

// Store implements Shared.
func (r *Redis) Store(ctx context.Context, key Key, tok credential.Token, ttl time.Duration) error {
	if ttl < time.Millisecond {
		return nil
	}
	name, _ := r.Names(key.ID)
	b, err := r.opts.Sealer.Seal(name, tok)
	if err != nil {
		return fmt.Errorf("shared cache: seal: %w", err)
	}
	err = r.do(ctx, opSet, name, func(ctx context.Context) error { return r.client.Set(ctx, name, b, ttl).Err() })
	if err != nil {
		r.opts.Meter.write(key.Name, "error")
		return fmt.Errorf("shared cache: set: %w", err)
	}
	r.opts.Meter.write(key.Name, "ok")
	return nil
}

// Offer implements Shared with WATCH, GET and MULTI/SET/EXEC on the key.
// Its read counts as a lookup.
func (r *Redis) Offer(ctx context.Context, key Key, tok credential.Token, ttl time.Duration, keep func(credential.Token) bool) (bool, credential.Token, error) {
	if ttl < time.Millisecond {
		return false, credential.Token{}, nil
	}
	name, _ := r.Names(key.ID)
	b, err := r.opts.Sealer.Seal(name, tok)
	if err != nil {
		return false, credential.Token{}, fmt.Errorf("shared cache: seal: %w", err)
	}
	var stored bool
	var kept credential.Token
	err = r.do(ctx, opSet, name, func(ctx context.Context) error {
		return r.watched(ctx, key, name, func(tx *redis.Tx, x credential.Token, ok bool) error {
			if ok && keep(x) {
				kept = x
				return nil
			}
			_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, name, b, ttl)
				return nil
			})
			stored = err == nil
			return err
		})
	})
	if err != nil {
		r.opts.Meter.write(key.Name, "error")
		return false, credential.Token{}, fmt.Errorf("shared cache: offer: %w", err)
	}
	if stored {
		r.opts.Meter.write(key.Name, "ok")
	}
	return stored, kept, nil
}

// Drop implements Shared with WATCH, GET and MULTI/DEL/EXEC, under every
// name Load reads (a key rotation may have the token under an old one).
// Its reads count as lookups.
func (r *Redis) Drop(ctx context.Context, key Key, match func(credential.Token) bool) (bool, error) {
	dropped := false
	for i := range r.nameKeys {
		name, _ := r.names(i, key.ID)
		err := r.do(ctx, opSet, name, func(ctx context.Context) error {
			return r.watched(ctx, key, name, func(tx *redis.Tx, x credential.Token, ok bool) error {
				if !ok || !match(x) {
					return nil
				}
				_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
					p.Del(ctx, name)
					return nil
				})
				dropped = dropped || err == nil
				return err
			})
		})
		if err != nil {
			return dropped, fmt.Errorf("shared cache: drop: %w", err)
		}
	}
	return dropped, nil
}

// watched reads and opens name's token under WATCH name and hands it to f
// (ok false: no readable token), counting the read as a lookup; f's
// MULTI/EXEC fails if another replica wrote the key meanwhile, which is an
// answer (that replica's token stands), not a failure: watched returns nil.
func (r *Redis) watched(ctx context.Context, key Key, name string, f func(tx *redis.Tx, tok credential.Token, ok bool) error) error {
	err := r.client.Watch(ctx, func(tx *redis.Tx) error {
		var tok credential.Token
		ok := false
		switch old, err := tx.Get(ctx, name).Bytes(); {
		case err == nil:
			if tok, err = r.opts.Sealer.Open(name, old); err != nil {
				r.opts.Meter.lookup(key.Name, "unreadable")
			} else {
				r.opts.Meter.lookup(key.Name, "hit")
				ok = true
			}
		case errors.Is(err, redis.Nil):
			r.opts.Meter.lookup(key.Name, "miss")
		default:
			return err
		}
		return f(tx, tok, ok)
	}, name)
	if errors.Is(err, redis.TxFailedErr) {
		return nil
	}
	return err
}

// Lock implements Shared with SET NX PX and a random owner value.
func (r *Redis) Lock(ctx context.Context, key Key) (func(), bool, error) {
	_, name := r.Names(key.ID)
	var owner [16]byte
	_, _ = rand.Read(owner[:])
	val := hex.EncodeToString(owner[:])
	var got bool
	err := r.do(ctx, opLock, name, func(ctx context.Context) (err error) {
		got, err = r.client.SetNX(ctx, name, val, r.opts.LockTTL).Result() // SET name val PX ttl NX
		return err
	})
	switch {
	case err == nil && !got:
		r.opts.Meter.lock(key.Name, "contended")
		return nil, false, nil
	case err != nil:
		r.opts.Meter.lock(key.Name, "error")
		return nil, false, fmt.Errorf("shared cache: lock: %w", err)
	}
	r.opts.Meter.lock(key.Name, "acquired")
	// While this replica mints, the lock is renewed every third of its
	// lifetime, so a mint slower than lock_ttl (a slow IdP, a starved CPU)
	// does not let another replica take the lock and mint too. A holder that
	// dies stops renewing and its lock expires as before; the renewal also
	// stops when the lock is lost, released, or the tier closed.
	stop, renewed := make(chan struct{}), make(chan struct{})
	go r.renewLock(name, val, stop, renewed)
	release := func() {
		close(stop)
		<-renewed
		// Not the caller's context: the lock should go even if it was cancelled.
		err := r.do(context.Background(), opLock, name, func(ctx context.Context) error {
			return releaseScript.Run(ctx, r.client, []string{name}, val).Err()
		})
		if err != nil {
			r.opts.Logger.Debug("fleet lock release failed; it expires by itself",
				zap.String("credential", key.Name), zap.Error(err))
		}
	}
	return release, true, nil
}

// renewLock extends the lock name, held with owner value val, every third
// of LockTTL until stop closes, the lock is no longer ours, or the tier is
// closed; it closes done when it returns.
func (r *Redis) renewLock(name, val string, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(max(r.opts.LockTTL/3, time.Millisecond))
	defer tick.Stop()
	ttl := strconv.FormatInt(r.opts.LockTTL.Milliseconds(), 10)
	for {
		select {
		case <-stop:
			return
		case <-r.ctx.Done():
			return
		case <-tick.C:
		}
		var ours int64
		err := r.do(r.ctx, opLock, name, func(ctx context.Context) (err error) {
			ours, err = extendScript.Run(ctx, r.client, []string{name}, val, ttl).Int64()
			return err
		})
		if err == nil && ours == 0 {
			return // expired and maybe taken: never take it back
		}
		// An error leaves the lock to expire unless the next renewal works.
	}
}

// Ping checks the connection once, outside the breaker (for start-up logs).
func (r *Redis) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	return r.client.Ping(ctx).Err()
}
