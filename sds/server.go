// Package sds is push mode: tokenbroker as Envoy's SecretDiscoveryService.
// Envoy's credential_injector filter, with the Generic injector, subscribes
// to a generic secret named after a credential and injects its value itself,
// so no request waits on tokenbroker. The value is the credential's header
// value exactly as a Check answer would set it (package filter formats it).
//
// go-control-plane runs the protocol — State-of-the-World and Delta streams,
// versions, nonces, ACK and NACK. This package decides what each subscriber
// may see and keeps it fresh:
//
//   - Who may subscribe is decided by the subscriber's verified identity —
//     the URI SAN of its TLS client certificate and its peer address — held
//     against the credential's allowed_sources. The node id a request
//     declares is never used: every identity has its own LinearCache holding
//     only what it may have, and requests reach it through a node this
//     server substitutes for the declared one (watcher.go).
//   - A credential with subscribers has a feed (feed.go): a timer refreshes
//     its token ahead of expiry through cache.Tokens — through the fleet
//     tier when there is one, so a fleet mints once per lifetime — and when
//     the usable end comes without a replacement, the feed pushes the
//     fail-closed value (value.go says what Envoy does with it).
package sds

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	xdslog "github.com/envoyproxy/go-control-plane/pkg/log"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/filter"
	"github.com/tokenbroker/tokenbroker/internal/logthrottle"
)

// ServiceName is the gRPC service Envoy's SDS client calls.
const ServiceName = "envoy.service.secret.v3.SecretDiscoveryService"

// Bounds on what a subscriber can make this server hold. Anyone who can
// open a stream can send any names; these keep that cost fixed.
const (
	// MaxStreams bounds open SDS streams per process (at the measured
	// ≤ 20 KB each, about 1 GB), so opening streams cannot exhaust memory.
	MaxStreams = 50000
	// MaxStreamsPerIdentity bounds one identity's streams (Envoy opens one
	// per secret), so a single caller cannot take every stream from the rest.
	// A caller with a client certificate is its principal and address; one
	// without is its address's network: an IPv4 address, or an IPv6 /64
	// (one host or LAN holds 2^64 addresses, so counting them one by one
	// would bound nothing).
	MaxStreamsPerIdentity = 1024
	// MaxAddressStreams bounds the streams of all callers without a
	// verified principal together. An address is the weakest identity —
	// many hosts, or one /64, can present many — so address-only callers
	// may fill at most this share of MaxStreams, and the rest stays for
	// callers with client certificates: a flood from addresses can never
	// lock out an Envoy with a certificate.
	MaxAddressStreams = MaxStreams / 2
	// MaxStreamsPerConnection is the HTTP/2 concurrent-stream limit of the
	// gRPC listener (ServerOptions): one connection is one identity, so it
	// needs no more than an identity may have.
	MaxStreamsPerConnection = MaxStreamsPerIdentity
	// SubscribeGrace is how long a stream may hold no subscription its
	// caller may have — none yet, only names refused, or all unsubscribed —
	// before it is closed: Envoy subscribes as it opens a stream, so only a
	// stream that serves nobody is closed, and one that asks for a
	// credential a later reload adds reconnects and gets it.
	SubscribeGrace = 30 * time.Second
	// MaxNamesPerStream bounds the secrets one stream subscribes to (Envoy
	// asks for one): go-control-plane keeps every requested name.
	MaxNamesPerStream = 64
	// MaxNameBytes bounds one requested name, for the same reason.
	MaxNameBytes = 256
)

// retryFloor is the shortest wait before asking the cache again when it
// gave no retry time (a budget refusal) or a token already due came back:
// a refused credential costs one look a second, never a loop.
const retryFloor = time.Second

// pollEvery is how often the value of a credential that can change in
// place (a static value file) is looked at while subscribed; the source
// itself stats the file at most once a second.
const pollEvery = 5 * time.Second

// Options configure a Server.
type Options struct {
	Filter *filter.Filter // the configuration in force; Reconfigure replaces it
	Tokens *cache.Tokens
	Logger *zap.Logger           // default zap.NewNop()
	Reg    prometheus.Registerer // nil: metrics not registered

	// Clock seams: Now defaults to the cache's clock, AfterFunc to
	// time.AfterFunc (it returns the timer's Stop).
	Now       func() time.Time
	AfterFunc func(d time.Duration, f func()) (stop func() bool)
}

// Server serves SDS. Create it with New, add it to a gRPC server with
// Register (End the Registration when that server is retired), pass every
// reload to Reconfigure, call Resync after the cache takes new settings,
// and call Stop when draining.
type Server struct {
	opts   Options
	log    *zap.Logger
	m      *metrics
	ctx    context.Context // cancelled by Stop: ends every stream
	cancel context.CancelFunc
	prefix string // per process, in every version string: a version is never reused across processes
	lim    limits

	byNode sync.Map       // *corev3.Node → *identity (the watcher's routing table)
	work   sync.WaitGroup // feed work in flight

	// live finds a request's stream without mu. A typed map under a
	// read lock, not a sync.Map: boxing the key cost an allocation per
	// request and ACK.
	liveMu sync.RWMutex
	live   map[streamKey]*stream

	mu      sync.Mutex // guards the fields below, every identity and feed, and what stream says
	filter  *filter.Filter
	streams map[streamKey]*stream
	idents  map[string]*identity
	budgets map[string]int // budgetKey → open streams
	anon    int            // open streams of callers without a verified principal
	feeds   map[string]*feed
	nextID  uint64
	stopped bool

	// Lines about refused and closed streams, which anyone can cause: at
	// most one per interval each, with the count since the last.
	refusedLog, idleLog logthrottle.Throttle

	// Test hooks, nil in production: a stream was registered (under mu), a
	// request was applied.
	afterOpen, afterRequest atomic.Pointer[func(*stream)]
}

// limits are the bounds in force: the Max constants (tests lower them to
// hit them cheaply).
type limits struct{ streams, addressStreams, perIdentity, names, nameBytes int }

// New builds a Server; it serves nothing until Register.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = opts.Tokens.Now
	}
	if opts.AfterFunc == nil {
		opts.AfterFunc = func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	s := &Server{
		opts:    opts,
		log:     opts.Logger.With(zap.String("component", "sds")),
		prefix:  hex.EncodeToString(b[:]),
		lim:     limits{MaxStreams, MaxAddressStreams, MaxStreamsPerIdentity, MaxNamesPerStream, MaxNameBytes},
		filter:  opts.Filter,
		streams: map[streamKey]*stream{},
		live:    map[streamKey]*stream{},
		idents:  map[string]*identity{},
		budgets: map[string]int{},
		feeds:   map[string]*feed{},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.m = newMetrics(opts.Reg, s)
	return s
}

// Register adds the SecretDiscoveryService (StreamSecrets, DeltaSecrets) to
// g. End the returned Registration when g is retired: its streams end
// (registration.go).
func (s *Server) Register(g grpc.ServiceRegistrar) *Registration { return s.register(g) }

// Stop ends every SDS stream — Envoy keeps the last value it had and
// reconnects to another replica — stops the refresh timers and waits for
// work in flight. New streams are refused. Call it as the gRPC server
// starts draining: long-lived streams would otherwise hold the drain to its
// deadline.
func (s *Server) Stop() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	for _, fd := range s.feeds {
		fd.stopTimer()
	}
	s.mu.Unlock()
	s.cancel()
	s.work.Wait()
}

// Invalidate makes the subscribers of credential name stop using the value
// they have: the feed asks the cache (whose token the caller dropped) for a
// new one at once and pushes it, or the fail-closed value if none can be
// had. It is what `tokenbroker invalidate` means for push mode.
func (s *Server) Invalidate(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fd := s.feeds[name]; fd != nil && !s.stopped {
		fd.epoch++ // the value held was obtained before the invalidation
		s.wakeSoonLocked(fd)
	}
}

// Subscribers returns, per credential, the streams subscribed to it and
// allowed to have it.
func (s *Server) Subscribers() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.feeds))
	for name, fd := range s.feeds {
		out[name] = len(fd.streams)
	}
	return out
}

// Streams is the number of open SDS streams.
func (s *Server) Streams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.streams)
}

func (s *Server) label(name string) string { return s.opts.Tokens.CredentialLabel(name) }

// xdsLogger sends go-control-plane's logs to zap at debug level (warnings
// at warn): it logs per watch and per request, which must not reach the
// default level. It logs names and versions, never a resource's content.
func (s *Server) xdsLogger() xdslog.Logger {
	l := s.log.Sugar()
	return xdslog.LoggerFuncs{DebugFunc: l.Debugf, InfoFunc: l.Debugf, WarnFunc: l.Debugf, ErrorFunc: l.Warnf}
}

// subscribeLocked adds names to st's subscription. An allowed name joins
// its credential's feed and, when the feed has a value, gets it at once;
// the feeds that have none yet are returned for prime. A name the identity
// may not have is refused: counted, logged once per stream, left out of
// its cache — go-control-plane then answers it with no resource.
func (s *Server) subscribeLocked(st *stream, names []string) (prime []*feed) {
	id := st.id
	for _, n := range names {
		if _, dup := st.names[n]; dup {
			continue
		}
		st.names[n] = struct{}{}
		id.subs[n]++
		cred, ok := s.filter.PushCredential(n)
		switch {
		case !ok:
			s.refuseLocked(st, n, rejectUnknown)
			continue
		case !cred.Allows(id.principal, id.address):
			s.refuseLocked(st, n, rejectNotAllowed)
			continue
		}
		fd := s.feedLocked(n, cred)
		fd.members[id] = struct{}{}
		fd.streams[st] = struct{}{}
		st.mu.Lock()
		st.feeds[n] = fd
		st.mu.Unlock()
		s.heldLocked(st)
		if fd.has {
			s.publishLocked(id, fd)
		} else if !slices.Contains(prime, fd) {
			prime = append(prime, fd)
		}
	}
	return prime
}

// unsubscribeLocked removes names from st's subscription; a credential no
// stream of the identity wants any more leaves its cache.
func (s *Server) unsubscribeLocked(st *stream, names []string) {
	id := st.id
	for _, n := range names {
		if _, ok := st.names[n]; !ok {
			continue
		}
		delete(st.names, n)
		st.mu.Lock()
		delete(st.feeds, n)
		st.mu.Unlock()
		if s.holdsNothingLocked(st) {
			s.emptyLocked(st)
		}
		fd := s.feeds[n]
		if fd != nil {
			fd.leave(st, s.opts.Now())
		}
		if id.subs[n]--; id.subs[n] > 0 {
			continue
		}
		delete(id.subs, n)
		if _, ok := id.held[n]; ok {
			_ = id.cache.DeleteResource(n)
			delete(id.held, n)
		}
		if fd != nil {
			delete(fd.members, id)
			if len(fd.members) == 0 {
				s.dropFeedLocked(fd)
			}
		}
	}
}

// refuseLocked counts a refused subscription and logs the first of a stream.
func (s *Server) refuseLocked(st *stream, name, reason string) {
	s.m.rejected.WithLabelValues(reason).Inc()
	if st.logged {
		return
	}
	st.logged = true
	s.log.Warn("SDS subscription refused",
		zap.String("secret", name), zap.String("reason", reason),
		zap.String("principal", st.id.principal), zap.String("address", st.id.address))
}

// publishLocked makes id's cache hold fd's current value, unless it does.
func (s *Server) publishLocked(id *identity, fd *feed) {
	gen := fd.gen.Load()
	if h, ok := id.held[fd.name]; ok && !h.revoked && h.gen == gen {
		return
	}
	_ = id.cache.UpdateResource(fd.name, fd.secret) // errors only for a nil resource
	id.held[fd.name] = held{gen: gen}
}

// revokeLocked replaces what id holds of name with the fail-closed value:
// Envoy ignores a withdrawn secret and would keep the token (value.go).
func (s *Server) revokeLocked(id *identity, name string) {
	if h, ok := id.held[name]; ok && !h.revoked {
		_ = id.cache.UpdateResource(name, failClosed(name))
		id.held[name] = held{revoked: true}
	}
}

// Reconfigure applies a reloaded configuration to every open stream: a
// subscription the new configuration no longer allows (credential removed,
// or allowed_sources changed) gets the fail-closed value in place of the
// token; one it now allows (a new credential, widened allowed_sources) gets
// the token; a credential whose identity or format changed gets a new value.
func (s *Server) Reconfigure(f *filter.Filter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.filter = f
	for name, fd := range s.feeds {
		if cred, ok := f.PushCredential(name); ok {
			if !cred.SameValue(fd.cred) {
				fd.epoch++ // values obtained under the old configuration are not adopted
			}
			fd.cred = cred
		}
	}
	for _, id := range s.idents {
		for n := range id.subs {
			cred, ok := f.PushCredential(n)
			allowed := ok && cred.Allows(id.principal, id.address)
			fd := s.feeds[n]
			member := fd.isMember(id)
			switch {
			case allowed && !member:
				fd = s.feedLocked(n, cred)
				fd.members[id] = struct{}{}
				for st := range id.streams {
					if _, ok := st.names[n]; ok {
						fd.streams[st] = struct{}{}
						st.mu.Lock()
						st.feeds[n] = fd
						st.mu.Unlock()
						s.heldLocked(st)
					}
				}
				if fd.has {
					s.publishLocked(id, fd)
				}
				s.log.Info("SDS subscription allowed after reload",
					zap.String("secret", n), zap.String("principal", id.principal), zap.String("address", id.address))
			case !allowed && member:
				for st := range id.streams {
					fd.leave(st, s.opts.Now())
					st.mu.Lock()
					delete(st.feeds, n)
					st.mu.Unlock()
				}
				delete(fd.members, id)
				s.revokeLocked(id, n)
				for st := range id.streams {
					if s.holdsNothingLocked(st) { // it never had the value: nothing to keep in place
						s.emptyLocked(st)
					}
				}
				s.log.Warn("SDS subscription no longer allowed after reload; fail-closed value pushed",
					zap.String("secret", n), zap.String("principal", id.principal), zap.String("address", id.address))
			}
		}
	}
	for _, fd := range s.feeds {
		switch {
		case len(fd.members) == 0:
			s.dropFeedLocked(fd)
		case !fd.has || fd.epoch != fd.adoptedEpoch:
			s.wakeSoonLocked(fd)
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
