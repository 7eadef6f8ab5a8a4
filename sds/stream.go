package sds

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// streamKey names a stream: go-control-plane numbers SotW and Delta streams
// separately.
type streamKey struct {
	delta bool
	id    int64
}

// stream is one SDS stream as the callbacks track it. Its requests and
// responses run in its own goroutine, one at a time; an ACK (the common
// request) touches only the stream's own lock, so a fan-out to many streams
// does not queue them all on Server.mu.
type stream struct {
	key streamKey
	id  *identity
	ctx context.Context
	// names is what go-control-plane has the stream subscribed to. Only the
	// stream's goroutine changes it, under Server.mu; that goroutine reads
	// it without a lock.
	names  map[string]struct{}
	logged bool // a refused subscription was logged (Server.mu)

	// Under Server.mu: what ends the stream, its budget, and the grace
	// timer that runs while it holds nothing (SubscribeGrace).
	closer     *closer
	budget     string
	idleStop   func() bool
	emptySince time.Time

	mu     sync.Mutex       // guards the fields below
	feeds  map[string]*feed // the allowed names' feeds (changed under Server.mu too)
	nonce  string           // of the last response: go-control-plane ignores requests with an older one
	sent   []sent           // what the last response carried, until it is ACKed
	nacked bool             // a NACK was logged for this stream
}

type sent struct {
	fd  *feed
	gen uint64
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
	var one [1]carried // Envoy subscribes a stream to one secret: no allocation per push
	out := one[:0]
	for _, r := range resp.GetResources() {
		out = append(out, carried{name: secretName(r.GetValue()), size: len(r.GetValue())})
	}
	c.s.responded(streamKey{id: id}, resp.GetNonce(), out)
}

func (c callbacks) OnStreamDeltaRequest(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	return c.s.deltaRequest(streamKey{delta: true, id: id}, req)
}

func (c callbacks) OnStreamDeltaResponse(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
	var one [1]carried
	out := one[:0]
	for _, r := range resp.GetResources() {
		out = append(out, carried{name: r.GetName(), size: len(r.GetResource().GetValue())})
	}
	c.s.responded(streamKey{delta: true, id: id}, resp.GetNonce(), out)
}

func (callbacks) OnFetchRequest(context.Context, *discoveryv3.DiscoveryRequest) error {
	return status.Error(codes.Unimplemented, "sds: fetch is not served")
}

func (callbacks) OnFetchResponse(*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse) {}

// carried is one secret in a response: its name and serialized size (which
// tells the fail-closed value from a token without reading the token).
type carried struct {
	name string
	size int
}

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
	// A caller who may have no credential at all gets no stream: it could
	// only hold a share of the bounds below. After a reload that grants it
	// one, its next attempt succeeds (Envoy retries a refused stream).
	if !s.filter.AllowsAny(principal, address) {
		return s.refuseStreamLocked(rejectNoCredential, principal, address,
			status.Error(codes.PermissionDenied, "sds: this caller may have no credential"))
	}
	bk := budgetKey(principal, address)
	switch {
	case len(s.streams) >= s.lim.streams,
		principal == "" && s.anon >= s.lim.addressStreams,
		s.budgets[bk] >= s.lim.perIdentity:
		return s.refuseStreamLocked(rejectOverLimit, principal, address,
			status.Error(codes.ResourceExhausted, "sds: too many streams"))
	}
	ik := identityKey(principal, address)
	id := s.idents[ik]
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
	st := &stream{key: key, id: id, ctx: ctx, names: map[string]struct{}{}, feeds: map[string]*feed{},
		closer: closerOf(ctx), budget: bk}
	id.streams[st] = struct{}{}
	s.streams[key] = st
	s.liveMu.Lock()
	s.live[key] = st
	s.liveMu.Unlock()
	s.budgets[bk]++
	if principal == "" {
		s.anon++
	}
	s.emptyLocked(st)
	if h := s.afterOpen.Load(); h != nil {
		(*h)(st)
	}
	return nil
}

// refuseStreamLocked counts a stream refused at open, logs it throttled,
// and returns err for go-control-plane to end the stream with.
func (s *Server) refuseStreamLocked(reason, principal, address string, err error) error {
	s.m.rejected.WithLabelValues(reason).Inc()
	if n, ok := s.refusedLog.Take(s.opts.Now(), throttleEvery); ok {
		s.log.Warn("SDS stream refused",
			zap.String("reason", reason), zap.String("principal", clip(principal)), zap.String("address", address),
			zap.Int64("refused", n), zap.Int("streams", len(s.streams)))
	}
	return err
}

// emptyLocked notes that st holds nothing its caller may have and starts
// its grace period, unless one runs.
func (s *Server) emptyLocked(st *stream) {
	st.emptySince = s.opts.Now()
	if st.idleStop == nil && st.closer != nil {
		st.idleStop = s.opts.AfterFunc(SubscribeGrace, func() { s.idle(st) })
	}
}

// heldLocked notes that st holds a subscription: no grace period runs.
func (s *Server) heldLocked(st *stream) {
	if st.idleStop != nil {
		st.idleStop()
		st.idleStop = nil
	}
}

// holdsNothingLocked reports whether st serves its caller nothing: no
// allowed subscription, and no fail-closed value a reload left in place of
// one (that stream must stay: Envoy keeps the last value it had, and the
// fail-closed one is what keeps it from the token).
func (s *Server) holdsNothingLocked(st *stream) bool {
	if len(st.feeds) > 0 {
		return false
	}
	for n := range st.names {
		if st.id.held[n].revoked {
			return false
		}
	}
	return true
}

// idle is the grace timer's function: a stream still holding nothing
// SubscribeGrace after it started to is closed.
func (s *Server) idle(st *stream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st.idleStop = nil
	if s.stopped || s.streams[st.key] != st || !s.holdsNothingLocked(st) {
		return
	}
	now := s.opts.Now()
	if rest := st.emptySince.Add(SubscribeGrace).Sub(now); rest > 0 {
		st.idleStop = s.opts.AfterFunc(rest, func() { s.idle(st) }) // it emptied again since the timer started
		return
	}
	s.m.rejected.WithLabelValues(rejectIdle).Inc()
	if n, ok := s.idleLog.Take(now, throttleEvery); ok {
		s.log.Warn("SDS stream closed: no subscription it may have within the grace period",
			zap.String("principal", clip(st.id.principal)), zap.String("address", st.id.address),
			zap.Duration("grace", SubscribeGrace), zap.Int64("closed", n))
	}
	st.closer.close(status.Errorf(codes.PermissionDenied,
		"sds: no secret this caller may have was subscribed within %v", SubscribeGrace))
}

// clip bounds a caller's field in a log line.
func clip(v string) string { return truncate(v, 256) }

// closed forgets a stream, and its identity with its last stream.
func (s *Server) closed(key streamKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[key]
	if st == nil {
		return // refused at open
	}
	s.unsubscribeLocked(st, slices.Collect(maps.Keys(st.names)))
	s.heldLocked(st) // stops the grace timer
	delete(s.streams, key)
	s.liveMu.Lock()
	delete(s.live, key)
	s.liveMu.Unlock()
	if s.budgets[st.budget]--; s.budgets[st.budget] <= 0 {
		delete(s.budgets, st.budget)
	}
	id := st.id
	if id.principal == "" {
		s.anon--
	}
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
	if h := s.afterRequest.Load(); h != nil {
		defer (*h)(st)
	}
	req.Node = st.id.node // whatever the client declared: routing and logs use the verified identity
	if !st.acknowledged(s, req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil, true) {
		return nil // go-control-plane ignores a request answering an older response; so does this
	}
	names := req.GetResourceNames()
	if err := s.checkNames(names, len(names)); err != nil {
		return err
	}
	if sameSet(st.names, names) {
		return nil // an ACK or NACK: nothing to subscribe
	}
	want := make(map[string]struct{}, len(names))
	for _, n := range names {
		want[n] = struct{}{}
	}
	var gone []string
	for n := range st.names {
		if _, ok := want[n]; !ok {
			gone = append(gone, n)
		}
	}
	s.mu.Lock()
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
	if h := s.afterRequest.Load(); h != nil {
		defer (*h)(st)
	}
	req.Node = st.id.node // go-control-plane keeps the first request's node for the stream: it is this one
	st.acknowledged(s, req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil, false)
	add, drop := req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe()
	if err := s.checkNames(add, len(st.names)+len(add)); err != nil {
		return err
	}
	// Names the client says it already has (after a reconnect) are kept by
	// go-control-plane too: the same bounds apply.
	known := req.GetInitialResourceVersions()
	if err := s.checkNames(slices.Collect(maps.Keys(known)), len(known)); err != nil {
		return err
	}
	if len(add) == 0 && len(drop) == 0 {
		return nil
	}
	s.mu.Lock()
	s.unsubscribeLocked(st, drop)
	prime := s.subscribeLocked(st, add)
	s.mu.Unlock()
	s.prime(st, prime)
	return nil
}

// sameSet reports whether names lists exactly the set have.
func sameSet(have map[string]struct{}, names []string) bool {
	for _, n := range names {
		if _, ok := have[n]; !ok {
			return false
		}
	}
	for n := range have {
		if !slices.Contains(names, n) {
			return false
		}
	}
	return true
}

// begin finds the stream a request belongs to and checks its type.
func (s *Server) begin(key streamKey, typeURL string) (*stream, error) {
	st := s.liveStream(key)
	if st == nil {
		return nil, status.Error(codes.Internal, "sds: unknown stream")
	}
	if typeURL != resource.SecretType {
		s.m.rejected.WithLabelValues(rejectBadRequest).Inc()
		return nil, status.Errorf(codes.InvalidArgument, "sds: only %s is served", resource.SecretType)
	}
	return st, nil
}

// liveStream returns the open stream key names, or nil.
func (s *Server) liveStream(key streamKey) *stream {
	s.liveMu.RLock()
	defer s.liveMu.RUnlock()
	return s.live[key]
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

// responded records what a response carried, for the push counter and ACK
// accounting.
func (s *Server) responded(key streamKey, nonce string, out []carried) {
	st := s.liveStream(key)
	if st == nil {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.nonce = nonce
	st.sent = st.sent[:0]
	for _, c := range out {
		fd := st.feeds[c.name]
		if fd == nil {
			// Not a feed of this stream: a fail-closed value after a reload
			// took the credential away.
			s.m.pushes.WithLabelValues(s.label(c.name), "fail_closed").Inc()
			continue
		}
		if c.size == fd.failClosedSize {
			fd.pushedFailClosed.Inc()
		} else {
			fd.pushedToken.Inc()
		}
		st.sent = append(st.sent, sent{fd: fd, gen: fd.gen.Load()})
	}
}

// acknowledged accounts the ACK or NACK a request carries for the stream's
// last response: an ACK of a feed's current value may complete that
// value's fan-out (push lag). With sotw, a request answering an older
// response is reported as stale (false), as go-control-plane ignores it.
func (st *stream) acknowledged(s *Server, nonce, detail string, nack, sotw bool) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if sotw && st.nonce != "" && nonce != st.nonce {
		return false
	}
	if nonce == "" || nonce != st.nonce || len(st.sent) == 0 {
		return true
	}
	if nack {
		s.m.nacks.Inc()
		if !st.nacked {
			st.nacked = true
			// Envoy's message names the check that failed, never the value.
			s.log.Warn("SDS subscriber rejected a secret (NACK)",
				zap.String("principal", st.id.principal), zap.String("address", st.id.address),
				zap.String("secret", st.sent[0].fd.name), zap.String("detail", truncate(detail, 256)))
		}
	} else {
		now := s.opts.Now()
		for _, x := range st.sent {
			x.fd.ack(st, x.gen, now)
		}
	}
	st.sent = st.sent[:0]
	return true
}
