package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/filter"
)

// Reload results, the values of tokenbroker_config_reloads_total{result}.
const (
	reloadApplied   = "applied"   // a new configuration is in force
	reloadUnchanged = "unchanged" // the file says what is already running
	reloadInvalid   = "invalid"   // rejected with FILE:LINE problems; the old configuration keeps serving
	reloadFailed    = "error"     // unreadable file or a token source that could not be built
)

// reloadDebounce coalesces the burst of events one save makes (an editor's
// write-rename-chmod, the ConfigMap symlink swap) into one reload.
const reloadDebounce = 100 * time.Millisecond

// reloadMetrics count reload attempts by result.
type reloadMetrics struct {
	total       *prometheus.CounterVec
	lastSuccess prometheus.Gauge
}

func newReloadMetrics(reg prometheus.Registerer) *reloadMetrics {
	m := &reloadMetrics{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_config_reloads_total",
			Help: "Configuration reload attempts by result: applied, unchanged, invalid (old configuration kept), error (old configuration kept).",
		}, []string{"result"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tokenbroker_config_last_reload_success_timestamp_seconds",
			Help: "When the configuration in force was loaded (start or last applied reload), as a Unix time.",
		}),
	}
	for _, r := range []string{reloadApplied, reloadUnchanged, reloadInvalid, reloadFailed} {
		m.total.WithLabelValues(r) // export zeros so alerts can use rate() from the start
	}
	m.lastSuccess.SetToCurrentTime()
	if reg != nil {
		reg.MustRegister(m.total, m.lastSuccess)
	}
	return m
}

// reload reads the configuration file again and, when it is valid, makes it
// the one in force for every Check that starts afterwards. An invalid file is
// logged with the same FILE:LINE problems `validate` prints, and the old
// configuration keeps serving. trigger says what asked (for the log line).
//
// Credentials keep their cached tokens across a reload as long as their
// identity (token URL, client, scopes, …) is unchanged, because the new filter
// shares the running cache, which is keyed by identity. Tokens of identities
// no longer in the file are dropped. Listener addresses and cache sizing are
// fixed at start: a change to them is logged as needing a restart and
// otherwise ignored.
func (s *server) reload(path, trigger string) (result string, err error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	log := s.log.With(zap.String("file", path), zap.String("trigger", trigger))
	defer func() { s.reloads.total.WithLabelValues(result).Inc() }()

	cfg, err := config.Load(path)
	if err != nil {
		var problems config.Errors
		if errors.As(err, &problems) {
			lines := make([]string, len(problems))
			for i, p := range problems {
				lines[i] = p.Error() // FILE:LINE: field: problem; never a secret
			}
			log.Error("configuration reload rejected; the previous configuration keeps serving", zap.Strings("problems", lines))
			return reloadInvalid, err
		}
		log.Error("configuration reload failed; the previous configuration keeps serving", zap.Error(err))
		return reloadFailed, err
	}

	old := s.cfg
	if restart := fixedChanges(old, cfg); len(restart) > 0 {
		log.Warn("configuration changes that apply only after a restart; running with the old values",
			zap.Strings("fields", restart))
	}
	// What cannot change live keeps its running value, so s.cfg always tells
	// what is in force and the warning repeats while the file differs.
	cfg.Listen, cfg.Cache, cfg.Broker, cfg.Admin, cfg.ForwardAuth = old.Listen, old.Cache, old.Broker, old.Admin, old.ForwardAuth
	if reflect.DeepEqual(old, cfg) {
		log.Info("configuration unchanged")
		return reloadUnchanged, nil
	}

	sources, err := buildSources(cfg, s.log) // not log: sources keep their logger after this reload
	if err != nil {
		log.Error("configuration reload failed; the previous configuration keeps serving", zap.Error(err))
		return reloadFailed, err
	}
	f, err := filter.New(cfg, sources, s.tokens, s.log, s.filterMetrics)
	if err != nil {
		log.Error("configuration reload failed; the previous configuration keeps serving", zap.Error(err))
		return reloadFailed, err
	}
	s.current.Store(f) // Checks already running finish on the filter they loaded
	s.sds.Reconfigure(f)
	s.cfg = cfg
	s.extra.reconfigure(cfg)

	kept, added, removed := diffIdentities(old, cfg)
	for _, k := range removed {
		s.tokens.Forget(k)
	}
	s.reloads.lastSuccess.SetToCurrentTime()
	log.Info("configuration reloaded",
		zap.Int("credentials", len(cfg.Credentials)),
		zap.Int("routes", len(cfg.Routes)),
		zap.Strings("tokens_kept", names(kept)),
		zap.Strings("credentials_new", names(added)),
		zap.Strings("tokens_dropped", names(removed)),
		zap.String("default_action", cfg.DefaultAction))
	return reloadApplied, nil
}

// fixedChanges lists the settings that differ between the running
// configuration and the new one but are only read at start.
func fixedChanges(old, cfg *config.Config) []string {
	var out []string
	if !reflect.DeepEqual(old.Listen, cfg.Listen) {
		out = append(out, "listen")
	}
	if !reflect.DeepEqual(old.Cache, cfg.Cache) {
		out = append(out, "cache")
	}
	// Built once at start-up with their listeners.
	if !reflect.DeepEqual(old.Broker, cfg.Broker) {
		out = append(out, "broker")
	}
	if !reflect.DeepEqual(old.Admin, cfg.Admin) {
		out = append(out, "admin")
	}
	if !reflect.DeepEqual(old.ForwardAuth, cfg.ForwardAuth) {
		out = append(out, "forward_auth")
	}
	return out
}

// diffIdentities sorts the cache keys of two configurations into those whose
// token survives the reload, new ones, and those to drop. A key counts as
// kept when any credential in the new file has the same identity, whatever
// its name.
func diffIdentities(old, cfg *config.Config) (kept, added, removed []cache.Key) {
	ids := func(c *config.Config) map[string]cache.Key {
		m := make(map[string]cache.Key, len(c.Credentials))
		for name, cr := range c.Credentials {
			m[cr.Identity()] = cache.Key{ID: cr.Identity(), Name: name}
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

// configWatch reports changes to one configuration file. It watches the
// file's directory rather than the file, because the usual ways a file is
// replaced — an editor's write-and-rename, Kubernetes swapping the ConfigMap
// `..data` symlink — replace the inode a file watch would follow.
type configWatch struct {
	path string
	w    *fsnotify.Watcher
}

// watchConfig starts watching path's directory. Call it before reading the
// file, so that no change made after the read is missed.
func watchConfig(path string) (*configWatch, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watching %s: %w", path, err)
	}
	if err := w.Add(filepath.Dir(path)); err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("watching %s: %w", filepath.Dir(path), err)
	}
	return &configWatch{path: path, w: w}, nil
}

func (cw *configWatch) close() { _ = cw.w.Close() }

// concerns reports whether ev may have changed the configuration: an event on
// the file's own name or on the ConfigMap's `..data` link, other than a bare
// attribute change.
func (cw *configWatch) concerns(ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	base := filepath.Base(ev.Name)
	return base == filepath.Base(cw.path) || strings.HasPrefix(base, "..data")
}

// reloadLoop reloads s's configuration on every SIGHUP on hup and, when cw is
// not nil, after every burst of changes in the configuration's directory. It
// returns when ctx ends, closing cw. done, when not nil, gets each result.
func (s *server) reloadLoop(ctx context.Context, path string, cw *configWatch, hup <-chan os.Signal, done func(trigger, result string)) {
	var events <-chan fsnotify.Event
	var errs <-chan error
	if cw != nil {
		defer cw.close()
		events, errs = cw.w.Events, cw.w.Errors
	}
	// A stopped timer whose channel fires reloadDebounce after the last event.
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	do := func(trigger string) {
		r, _ := s.reload(path, trigger)
		if done != nil {
			done(trigger, r)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			do("sighup")
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if cw.concerns(ev) {
				debounce.Reset(reloadDebounce)
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			s.log.Warn("configuration watch error; SIGHUP still reloads", zap.Error(err))
		case <-debounce.C:
			do("file")
		}
	}
}
