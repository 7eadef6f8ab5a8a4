package main

import (
	"context"
	"errors"
	"os"
	"reflect"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/config"
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

// reload reads the configuration file again and, when it is valid, puts it
// in force, every section of it, atomically: each component prepares the
// new configuration first (binding new addresses, building clients, token
// sources and the filter), and only when all could do every change commit.
// An invalid file is logged with the same FILE:LINE problems `validate`
// prints, and a file that cannot be put in force (an address taken, a
// certificate that does not load) with its error; either way the running
// configuration keeps serving. trigger says what asked (for the log line).
//
// What changes takes effect for the next request; requests in flight finish
// on the configuration they started with (see each component for its
// part). Cached tokens whose identity is unchanged stay cached.
func (a *assembly) reload(path, trigger string) (result string, err error) {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	log := a.log.With(zap.String("file", path), zap.String("trigger", trigger))
	defer func() { a.reloads.total.WithLabelValues(result).Inc() }()

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
	old, d := a.cfg.Load(), digestsOf(cfg)
	if old.same(cfg, d) {
		log.Info("configuration unchanged")
		return reloadUnchanged, nil
	}
	changed := sections(old, cfg, d)
	oldFilter := a.decisions.filter // set on commit, under the reload lock
	restart, err := a.apply(cfg, d)
	if err != nil {
		log.Error("configuration reload failed; the previous configuration keeps serving", zap.Error(err))
		return reloadFailed, err
	}
	if len(restart) > 0 {
		// apply kept the running values, so the warning repeats while the file differs.
		log.Warn("configuration changes that apply only after a restart; running with the old values",
			zap.Strings("fields", restart))
	}
	if old.same(cfg, d) {
		log.Info("configuration unchanged")
		return reloadUnchanged, nil
	}
	kept, added, removed := diffIdentities(oldFilter, a.decisions.filter)
	defer releaseLoadMemory() // after the log line below: the old configuration is garbage by then
	a.reloads.lastSuccess.SetToCurrentTime()
	log.Info("configuration reloaded",
		zap.Strings("sections", changed),
		zap.Int("credentials", len(cfg.Credentials)),
		zap.Int("routes", len(cfg.Routes)),
		zap.Strings("tokens_kept", names(kept)),
		zap.Strings("credentials_new", names(added)),
		zap.Strings("tokens_dropped", names(removed)),
		zap.String("default_action", cfg.DefaultAction))
	return reloadApplied, nil
}

// sections names the top-level sections that differ between the
// configuration in force and cfg, whose digests are d (listen.* by
// listener), for the reload's log line.
func sections(in *inForce, cfg *config.Config, d digests) []string {
	old := in.cfg
	var out []string
	add := func(name string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			out = append(out, name)
		}
	}
	add("listen.grpc", old.Listen.GRPC, cfg.Listen.GRPC)
	add("listen.admin", old.Listen.Admin, cfg.Listen.Admin)
	add("listen.http", old.Listen.HTTP, cfg.Listen.HTTP)
	add("listen.broker", old.Listen.Broker, cfg.Listen.Broker)
	add("listen.tls", old.Listen.TLS, cfg.Listen.TLS)
	add("default_action", old.DefaultAction, cfg.DefaultAction)
	add("credentials", in.credentials, d.credentials)
	add("routes", in.routes, d.routes)
	add("cache", old.Cache, cfg.Cache)
	add("shutdown", old.Shutdown, cfg.Shutdown)
	add("forward_auth", old.ForwardAuth, cfg.ForwardAuth)
	if !sameBroker(old.Broker, cfg.Broker) {
		out = append(out, "broker")
	}
	add("admin", old.Admin, cfg.Admin)
	return out
}

// reloadLoop reloads the configuration on every SIGHUP on hup and, when cw is
// not nil, after every burst of changes in the configuration's directory. It
// returns when ctx ends, closing cw. done, when not nil, gets each result.
func (a *assembly) reloadLoop(ctx context.Context, path string, cw *configWatch, hup <-chan os.Signal, done func(trigger, result string)) {
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
		r, _ := a.reload(path, trigger)
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
			a.log.Warn("configuration watch error; SIGHUP still reloads", zap.Error(err))
		case <-debounce.C:
			do("file")
		}
	}
}
