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
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	xdslog "github.com/envoyproxy/go-control-plane/pkg/log"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/config"
	"github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/filter"
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
	MaxStreamsPerIdentity = 1024
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
// Register, pass every reload to Reconfigure, and call Stop when draining.
type Server struct {
	opts   Options
	log    *zap.Logger
	m      *metrics
	xds    serverv3.Server
	ctx    context.Context // cancelled by Stop: ends every stream
	cancel context.CancelFunc
	prefix string // per process, in every version string: a version is never reused across processes
	lim    limits

	byNode sync.Map       // *corev3.Node → *identity (the watcher's routing table)
	work   sync.WaitGroup // feed work in flight

	mu      sync.Mutex // guards the fields below and every identity, stream and feed
	filter  *filter.Filter
	streams map[streamKey]*stream
	idents  map[string]*identity
	feeds   map[string]*feed
	nextID  uint64
	stopped bool
}

// limits are the bounds in force: the Max constants (tests lower them to
// hit them cheaply).
type limits struct{ streams, perIdentity, names, nameBytes int }

// streamKey names a stream: go-control-plane numbers SotW and Delta streams
// separately.
type streamKey struct {
	delta bool
	id    int64
}

// stream is one SDS stream as the callbacks track it.
type stream struct {
	key    streamKey
	id     *identity
	ctx    context.Context
	names  map[string]struct{} // what go-control-plane has it subscribed to
	nonce  string              // of the last response: go-control-plane ignores requests with an older one
	sent   []sent              // what the last response carried, until it is ACKed
	logged bool                // a refused subscription was logged for this stream
	nacked bool                // a NACK was logged for this stream
}

type sent struct {
	name string
	gen  uint64
}

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
		lim:     limits{MaxStreams, MaxStreamsPerIdentity, MaxNamesPerStream, MaxNameBytes},
		filter:  opts.Filter,
		streams: map[streamKey]*stream{},
		idents:  map[string]*identity{},
		feeds:   map[string]*feed{},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.m = newMetrics(opts.Reg, s)
	s.xds = serverv3.NewServer(s.ctx, watcher{s}, callbacks{s},
		// An empty request subscribes to nothing: Envoy always names its secrets.
		config.DeactivateLegacyWildcard(),
		sotw.WithLogger(s.xdsLogger()))
	return s
}

// Register adds the SecretDiscoveryService (StreamSecrets, DeltaSecrets) to g.
func (s *Server) Register(g grpc.ServiceRegistrar) {
	secretv3.RegisterSecretDiscoveryServiceServer(g, service{s: s})
}

// service exposes the two streaming methods; FetchSecrets (REST-style
// polling) stays unimplemented: a unary call has nothing to keep fresh.
type service struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	s *Server
}

func (v service) StreamSecrets(st secretv3.SecretDiscoveryService_StreamSecretsServer) error {
	return v.s.xds.StreamSecrets(st)
}

func (v service) DeltaSecrets(st secretv3.SecretDiscoveryService_DeltaSecretsServer) error {
	return v.s.xds.DeltaSecrets(st)
}

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

// callbacks are go-control-plane's hooks into every stream. They run in the
// stream's own goroutine, before go-control-plane acts on a request.
type callbacks struct{ s *Server }

var _ serverv3.Callbacks = callbacks{}

func (c callbacks) OnStreamOpen(ctx context.Context, id int64, typeURL string) error {
	return c.s.open(ctx, streamKey{id: id}, typeURL)
}

func (c callbacks) OnStreamClosed(id int64, _ *corev3.Node) { c.s.closed(streamKey{id: id}) }

func (c callbacks) OnDeltaStreamOpen(ctx context.Context, id int64, typeURL string) error {
	return c.s.open(ctx, streamKey{delta: true, id: id}, typeURL)
}

func (c callbacks) OnDeltaStreamClosed(id int64, _ *corev3.Node) {
	c.s.closed(streamKey{delta: true, id: id})
}

func (c callbacks) OnStreamRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	return c.s.request(streamKey{id: id}, req)
}

func (c callbacks) OnStreamResponse(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	names := make([]string, 0, len(resp.GetResources()))
	for _, r := range resp.GetResources() {
		names = append(names, secretName(r.GetValue()))
	}
	c.s.responded(streamKey{id: id}, resp.GetNonce(), names)
}

func (c callbacks) OnStreamDeltaRequest(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	return c.s.deltaRequest(streamKey{delta: true, id: id}, req)
}

func (c callbacks) OnStreamDeltaResponse(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
	names := make([]string, 0, len(resp.GetResources()))
	for _, r := range resp.GetResources() {
		names = append(names, r.GetName())
	}
	c.s.responded(streamKey{delta: true, id: id}, resp.GetNonce(), names)
}

func (callbacks) OnFetchRequest(context.Context, *discoveryv3.DiscoveryRequest) error {
	return status.Error(codes.Unimplemented, "sds: fetch is not served")
}

func (callbacks) OnFetchResponse(*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse) {}

// open registers a new stream under its verified identity.
func (s *Server) open(ctx context.Context, key streamKey, typeURL string) error {
	if typeURL != resource.SecretType {
		s.m.rejected.WithLabelValues(rejectBadRequest).Inc()
		return status.Errorf(codes.InvalidArgument, "sds: only %s is served", resource.SecretType)
	}
	principal, address := peerIdentity(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		s.m.rejected.WithLabelValues(rejectStopping).Inc()
		return status.Error(codes.Unavailable, "sds: shutting down")
	}
	ik := identityKey(principal, address)
	id := s.idents[ik]
	if len(s.streams) >= s.lim.streams || id != nil && len(id.streams) >= s.lim.perIdentity {
		s.m.rejected.WithLabelValues(rejectOverLimit).Inc()
		s.log.Debug("SDS stream refused: stream bound reached",
			zap.String("principal", principal), zap.String("address", address), zap.Int("streams", len(s.streams)))
		return status.Error(codes.ResourceExhausted, "sds: too many streams")
	}
	if id == nil {
		s.nextID++
		id = &identity{
			key: ik, principal: principal, address: address,
			node: &corev3.Node{Id: ik},
			cache: cachev3.NewLinearCache(resource.SecretType,
				cachev3.WithVersionPrefix(s.prefix+"-"+strconv.FormatUint(s.nextID, 36)+"-"),
				cachev3.WithLogger(s.xdsLogger())),
			streams: map[*stream]struct{}{},
			subs:    map[string]int{},
			held:    map[string]held{},
		}
		s.idents[ik] = id
		s.byNode.Store(id.node, id)
	}
	st := &stream{key: key, id: id, ctx: ctx, names: map[string]struct{}{}}
	id.streams[st] = struct{}{}
	s.streams[key] = st
	return nil
}

// closed forgets a stream, and its identity with its last stream.
func (s *Server) closed(key streamKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[key]
	if st == nil {
		return // refused at open
	}
	s.unsubscribeLocked(st, slices.Collect(maps.Keys(st.names)))
	delete(s.streams, key)
	id := st.id
	delete(id.streams, st)
	if len(id.streams) == 0 {
		delete(s.idents, id.key)
		s.byNode.Delete(id.node)
	}
}

// request handles a State-of-the-World request: it replaces the declared
// node with the verified one, accounts an ACK or NACK, and applies the
// request's full list of names.
func (s *Server) request(key streamKey, req *discoveryv3.DiscoveryRequest) error {
	st, err := s.begin(key, req.GetTypeUrl())
	if err != nil {
		return err
	}
	req.Node = st.id.node // whatever the client declared: routing and logs use the verified identity
	s.mu.Lock()
	if st.nonce != "" && req.GetResponseNonce() != st.nonce {
		// go-control-plane ignores a request answering an older response;
		// so does the bookkeeping, to stay in step with it.
		s.mu.Unlock()
		return nil
	}
	s.acknowledgedLocked(st, req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
	s.mu.Unlock()
	names := req.GetResourceNames()
	if err := s.checkNames(names, len(names)); err != nil {
		return err
	}
	want := make(map[string]struct{}, len(names))
	for _, n := range names {
		want[n] = struct{}{}
	}
	s.mu.Lock()
	var gone []string
	for n := range st.names {
		if _, ok := want[n]; !ok {
			gone = append(gone, n)
		}
	}
	s.unsubscribeLocked(st, gone)
	prime := s.subscribeLocked(st, names)
	s.mu.Unlock()
	s.prime(st, prime)
	return nil
}

// deltaRequest handles a Delta request the same way, with its subscribe
// and unsubscribe lists.
func (s *Server) deltaRequest(key streamKey, req *discoveryv3.DeltaDiscoveryRequest) error {
	st, err := s.begin(key, req.GetTypeUrl())
	if err != nil {
		return err
	}
	req.Node = st.id.node // go-control-plane keeps the first request's node for the stream: it is this one
	s.mu.Lock()
	s.acknowledgedLocked(st, req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
	total := len(st.names) + len(req.GetResourceNamesSubscribe())
	s.mu.Unlock()
	if err := s.checkNames(req.GetResourceNamesSubscribe(), total); err != nil {
		return err
	}
	// Names the client says it already has (after a reconnect) are kept by
	// go-control-plane too: the same bounds apply.
	if err := s.checkNames(slices.Collect(maps.Keys(req.GetInitialResourceVersions())), len(req.GetInitialResourceVersions())); err != nil {
		return err
	}
	s.mu.Lock()
	s.unsubscribeLocked(st, req.GetResourceNamesUnsubscribe())
	prime := s.subscribeLocked(st, req.GetResourceNamesSubscribe())
	s.mu.Unlock()
	s.prime(st, prime)
	return nil
}

// begin finds the stream a request belongs to and checks its type.
func (s *Server) begin(key streamKey, typeURL string) (*stream, error) {
	s.mu.Lock()
	st := s.streams[key]
	s.mu.Unlock()
	if st == nil {
		return nil, status.Error(codes.Internal, "sds: unknown stream")
	}
	if typeURL != resource.SecretType {
		s.m.rejected.WithLabelValues(rejectBadRequest).Inc()
		return nil, status.Errorf(codes.InvalidArgument, "sds: only %s is served", resource.SecretType)
	}
	return st, nil
}

// checkNames enforces the name bounds on a request (total is the stream's
// subscription count once it applies). A request over a bound closes the
// stream before go-control-plane stores anything of it.
func (s *Server) checkNames(names []string, total int) error {
	bad := ""
	switch {
	case total > s.lim.names:
		bad = fmt.Sprintf("at most %d secrets per stream", s.lim.names)
	default:
		for _, n := range names {
			if len(n) > s.lim.nameBytes {
				bad = fmt.Sprintf("secret names are at most %d bytes", s.lim.nameBytes)
				break
			}
			if n == "*" {
				bad = "wildcard subscriptions are not served: name each secret"
				break
			}
		}
	}
	if bad == "" {
		return nil
	}
	s.m.rejected.WithLabelValues(rejectBadRequest).Inc()
	return status.Error(codes.InvalidArgument, "sds: "+bad)
}

// responded records what a response carried, for ACK accounting and the
// push counter.
func (s *Server) responded(key streamKey, nonce string, names []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[key]
	if st == nil {
		return
	}
	st.nonce = nonce
	st.sent = st.sent[:0]
	for _, n := range names {
		h, ok := st.id.held[n]
		if !ok {
			continue
		}
		value := "token"
		if fd := s.feeds[n]; h.revoked || fd == nil || fd.failClosed {
			value = "fail_closed"
		}
		s.m.pushes.WithLabelValues(s.label(n), value).Inc()
		st.sent = append(st.sent, sent{name: n, gen: h.gen})
	}
}

// acknowledgedLocked accounts the ACK or NACK a request carries for the
// stream's last response: an ACK of a feed's current value may complete
// that value's fan-out (push lag).
func (s *Server) acknowledgedLocked(st *stream, nonce, detail string, nack bool) {
	if nonce == "" || nonce != st.nonce || len(st.sent) == 0 {
		return
	}
	if nack {
		s.m.nacks.Inc()
		if !st.nacked {
			st.nacked = true
			// Envoy's message names the check that failed, never the value.
			s.log.Warn("SDS subscriber rejected a secret (NACK)",
				zap.String("principal", st.id.principal), zap.String("address", st.id.address),
				zap.String("secret", st.sent[0].name), zap.String("detail", truncate(detail, 256)))
		}
	} else {
		now := s.opts.Now()
		for _, x := range st.sent {
			if fd := s.feeds[x.name]; fd != nil && fd.gen == x.gen && fd.ack(st) {
				s.settledLocked(fd, now)
			}
		}
	}
	st.sent = st.sent[:0]
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
		fd := s.feeds[n]
		if fd != nil && fd.leave(st) {
			s.settledLocked(fd, s.opts.Now())
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
	if h, ok := id.held[fd.name]; ok && !h.revoked && h.gen == fd.gen {
		return
	}
	_ = id.cache.UpdateResource(fd.name, fd.secret) // errors only for a nil resource
	id.held[fd.name] = held{gen: fd.gen}
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
					}
				}
				if fd.has {
					s.publishLocked(id, fd)
				}
				s.log.Info("SDS subscription allowed after reload",
					zap.String("secret", n), zap.String("principal", id.principal), zap.String("address", id.address))
			case !allowed && member:
				for st := range id.streams {
					if fd.leave(st) {
						s.settledLocked(fd, s.opts.Now())
					}
				}
				delete(fd.members, id)
				s.revokeLocked(id, n)
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
