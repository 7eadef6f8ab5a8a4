package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/telemetry"
)

// brokerEndpoint is broker.*: the token endpoint's upstreams, limits,
// budgets and pass-through parameters, on while listen.broker is set. A new
// broker section builds a new broker.Broker that the next request gets;
// requests in flight finish on theirs. The cached tokens stay in the token
// cache, keyed by upstream, token URL, client and parameters, and are bound
// to their secret with the same key as before (broker.binding_key_file,
// keys derived from cache.redis's encryption keys, or one random key per
// process), so every key the new section still produces
// is served from cache. Tokens of upstreams that are gone are dropped.
// Per-client limit buckets and the broker's request counters start afresh.
type brokerEndpoint struct {
	log        *zap.Logger
	reg        prometheus.Registerer
	tokens     *tokenCache
	budgets    *budgets
	processKey []byte

	cur   atomic.Pointer[brokerInForce] // nil: the broker is off
	on    bool                          // in force; apply and commit run under the reload lock
	cfg   config.Broker
	fleet [][]byte // the encryption keys the bindings in force derive from
}

// brokerInForce is one broker section, built.
type brokerInForce struct {
	b       *broker.Broker
	mux     http.Handler
	metrics *laterRegistry
}

// current is the broker in force, nil when off.
func (e *brokerEndpoint) current() *broker.Broker {
	if g := e.cur.Load(); g != nil {
		return g.b
	}
	return nil
}

// ServeHTTP answers with the broker in force (the broker listener's handler).
func (e *brokerEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g := e.cur.Load()
	if g == nil {
		http.NotFound(w, r)
		return
	}
	g.mux.ServeHTTP(w, r)
}

func (e *brokerEndpoint) start(cfg *config.Config) error { return now(e.apply(cfg)) }

func (e *brokerEndpoint) apply(cfg *config.Config) (change, error) {
	on := cfg.Listen.Broker != ""
	fleet := fleetKeys(cfg)
	if on == e.on && (!on || sameBroker(cfg.Broker, e.cfg) && slices.EqualFunc(fleet, e.fleet, bytes.Equal)) {
		return change{}, nil
	}
	var next *brokerInForce
	if on {
		metrics := newLaterRegistry(e.reg)
		b, err := broker.New(broker.Options{Config: cfg.Broker, Tokens: e.tokens.Tokens, Meter: e.budgets.meter,
			Logger: e.log, Registerer: metrics, HMACKey: e.bindingKey(cfg), FleetKeys: fleet})
		if err != nil {
			return change{}, fmt.Errorf("broker: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle(cfg.Broker.Path, telemetry.WrapHandler("broker token request", cfg.Broker.Path, b))
		next = &brokerInForce{b: b, mux: mux, metrics: metrics}
	}
	return change{
		commit: func() {
			var metrics, oldMetrics *laterRegistry
			if next != nil {
				metrics = next.metrics
			}
			if old := e.cur.Swap(next); old != nil {
				oldMetrics = old.metrics
			}
			if err := metrics.swapInto(e.reg, oldMetrics); err != nil {
				e.log.Error("broker metrics not registered", zap.Error(err))
			}
			e.on, e.cfg, e.fleet = on, cfg.Broker, fleet
		},
		retire: func() { e.forgetUpstreamsGone(cfg) },
	}, nil
}

func (e *brokerEndpoint) stop(context.Context) {}

// bindingKey keys the HMAC that binds a cached token to its secret:
// broker.binding_key_file; nil with cache.redis, so the broker derives the
// keys from the fleet's encryption keys and replicas share bindings; else
// one random key per process, kept across reloads.
func (e *brokerEndpoint) bindingKey(cfg *config.Config) []byte {
	if k := cfg.Broker.BindingKey.Reveal(); k != "" {
		return []byte(k)
	}
	if fleetKeys(cfg) != nil {
		return nil
	}
	return e.processKey
}

// fleetKeys are cache.redis's encryption keys, nil without cache.redis.
func fleetKeys(cfg *config.Config) [][]byte {
	if cfg.Cache.Redis == nil {
		return nil
	}
	return cfg.Cache.Redis.EncryptionKeys
}

// forgetUpstreamsGone drops the cached tokens of upstreams cfg no longer has
// (all of them when the broker is off): nothing can ask for them again.
func (e *brokerEndpoint) forgetUpstreamsGone(cfg *config.Config) {
	keep := map[string]bool{}
	if cfg.Listen.Broker != "" {
		for i, u := range cfg.Broker.Upstreams {
			keep[broker.NamePrefix+upstreamName(u, i)] = true
		}
	}
	for _, st := range e.tokens.Snapshot() {
		if broker.Owns(st.Key) && !keep[st.Key.Name] {
			e.tokens.Forget(st.Key)
		}
	}
}

// upstreamName is the name broker.New gives the i-th upstream.
func upstreamName(u config.BrokerUpstream, i int) string {
	if u.Name != "" {
		return u.Name
	}
	return fmt.Sprintf("upstream-%d", i)
}

// sameBroker compares two broker sections by what they say, not by the
// lines they sit on.
func sameBroker(a, b config.Broker) bool {
	strip := func(c config.Broker) config.Broker {
		c.Upstreams = append([]config.BrokerUpstream(nil), c.Upstreams...)
		for i := range c.Upstreams {
			c.Upstreams[i].Line = 0
		}
		return c
	}
	return reflect.DeepEqual(strip(a), strip(b))
}
