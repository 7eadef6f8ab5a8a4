package main

import (
	"context"
	"fmt"
	"slices"

	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
	"github.com/tokenbroker/tokenbroker/envoy"
	"github.com/tokenbroker/tokenbroker/filter"
)

// decisions are credentials, routes and default_action: the filter that
// decides every Check and forward-auth request, held in an envoy.Current
// that both servers read. A new configuration builds a new filter (token
// sources included) that the next request gets; requests in flight finish
// on the one they loaded. The filter shares the running token cache, which
// is keyed by identity, so a credential whose identity is unchanged keeps
// its token; identities no longer in the file are dropped.
type decisions struct {
	log     *zap.Logger
	tokens  *tokenCache
	metrics *filter.Metrics // shared by every filter built
	current envoy.Current
	filter  *filter.Filter // the one in current, for push mode; set on commit, under the reload lock
}

func (d *decisions) start(cfg *config.Config) error { return now(d.apply(cfg)) }

func (d *decisions) apply(cfg *config.Config) (change, error) {
	sources, err := buildSources(cfg, d.log)
	if err != nil {
		return change{}, err
	}
	f, err := filter.New(cfg, sources, d.tokens.Tokens, d.log, d.metrics)
	if err != nil {
		return change{}, err
	}
	old := d.filter
	return change{
		commit: func() {
			d.current.Store(f)
			d.filter = f
		},
		retire: func() {
			if old == nil {
				return
			}
			_, _, removed := diffIdentities(old, f)
			for _, k := range removed {
				d.tokens.Forget(k)
			}
		},
	}, nil
}

func (d *decisions) stop(context.Context) {}

// buildSources makes a token source for every credential.
func buildSources(cfg *config.Config, log *zap.Logger) (map[string]credential.Source, error) {
	out := make(map[string]credential.Source, len(cfg.Credentials))
	sugar := log.Sugar()
	// One function for every source, the credential's field added when a
	// note is logged: log.With per source encodes the field into a buffer of
	// its own at once (~1 KB per credential), and even a closure holding the
	// name is 32 bytes per credential.
	// The sources keep one pointer to hooks in the endpoint they share, not
	// a copy of the function each (16 bytes per credential).
	hooks := &credential.Hooks{Logf: func(name, format string, args ...any) {
		sugar.Infow(fmt.Sprintf(format, args...), "credential", name)
	}}
	for name, c := range cfg.Credentials {
		src, err := hooks.FromConfig(c)
		if err != nil {
			return nil, fmt.Errorf("credential %q: %w", name, err)
		}
		out[name] = src
	}
	return out, nil
}

// diffIdentities sorts the cache keys of two configurations' filters into
// those whose token survives the reload, new ones, and those to drop. A key
// counts as kept when any credential in the new file has the same identity,
// whatever its name.
func diffIdentities(old, cfg *filter.Filter) (kept, added, removed []cache.Key) {
	ids := func(f *filter.Filter) map[string]cache.Key {
		m := map[string]cache.Key{}
		for k := range f.Keys() {
			m[k.ID] = k
		}
		return m
	}
	before, after := ids(old), ids(cfg)
	for id, k := range after {
		if _, ok := before[id]; ok {
			kept = append(kept, k)
		} else {
			added = append(added, k)
		}
	}
	for id, k := range before {
		if _, ok := after[id]; !ok {
			removed = append(removed, k)
		}
	}
	return kept, added, removed
}

func names(keys []cache.Key) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.Name
	}
	slices.Sort(out)
	return out
}
