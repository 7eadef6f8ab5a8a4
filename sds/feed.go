package sds

import (
	"context"
	"errors"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/filter"
)

// feed keeps one subscribed credential's value fresh and pushes it to the
// identities allowed to have it. Its timer, not requests, drives refreshes:
// at the token's refresh point it asks the cache for a replacement (through
// the fleet tier, so a fleet's feeds share one mint), and at the token's
// usable end without one it pushes the fail-closed value. All fields are
// guarded by Server.mu.
type feed struct {
	name string
	cred filter.PushCredential

	has          bool          // a value has been decided (a token, or fail-closed)
	failClosed   bool          // the value is the fail-closed one
	value        string        // the header value pushed ("" when fail-closed)
	lease        cache.Lease   // the token behind value
	gen          atomic.Uint64 // bumped whenever the value changes (under Server.mu; read by streams)
	secret       *tlsv3.Secret // the resource for value, shared by every identity
	retryAt      time.Time     // after a failed refresh: when asking again can help
	stop         func() bool   // the pending timer
	dropped      bool          // no subscriber is left; the feed is gone
	epoch        uint64        // bumped by a reload that changes the credential's value
	adoptedEpoch uint64        // epoch of the value held
	timing       uint64        // bumped by Resync: a lease obtained before has the old settings' deadlines

	members map[*identity]struct{} // identities subscribed and allowed
	streams map[*stream]struct{}   // their streams subscribed to it

	// Series resolved once: a fan-out counts a push per subscriber.
	pushedToken, pushedFailClosed prometheus.Counter
	lag                           prometheus.Observer
	failClosedSize                int // serialized size of the fail-closed resource

	lagMu   sync.Mutex           // guards unacked and since (taken after Server.mu and stream.mu)
	unacked map[*stream]struct{} // streams yet to ACK the current value
	since   time.Time            // when the current value was adopted
}

// feedLocked returns name's feed, creating it for cred.
func (s *Server) feedLocked(name string, cred filter.PushCredential) *feed {
	if fd := s.feeds[name]; fd != nil {
		return fd
	}
	label := s.label(name)
	fd := &feed{name: name, cred: cred,
		members: map[*identity]struct{}{}, streams: map[*stream]struct{}{}, unacked: map[*stream]struct{}{},
		pushedToken:      s.m.pushes.WithLabelValues(label, "token"),
		pushedFailClosed: s.m.pushes.WithLabelValues(label, "fail_closed"),
		lag:              s.m.lag.WithLabelValues(label),
		failClosedSize:   proto.Size(failClosed(name)),
	}
	s.feeds[name] = fd
	return fd
}

// dropFeedLocked ends a feed with no subscriber left: no more refreshes.
func (s *Server) dropFeedLocked(fd *feed) {
	fd.stopTimer()
	fd.dropped = true
	delete(s.feeds, fd.name)
}

// isMember reports whether id gets the feed's value; false for no feed.
func (fd *feed) isMember(id *identity) bool {
	if fd == nil {
		return false
	}
	_, ok := fd.members[id]
	return ok
}

func (fd *feed) stopTimer() {
	if fd.stop != nil {
		fd.stop()
		fd.stop = nil
	}
}

// leave removes st from the feed's subscribers (under Server.mu).
func (fd *feed) leave(st *stream, now time.Time) {
	delete(fd.streams, st)
	fd.lagMu.Lock()
	defer fd.lagMu.Unlock()
	fd.settle(st, now)
}

// ack records that st acknowledged generation gen of the value.
func (fd *feed) ack(st *stream, gen uint64, now time.Time) {
	fd.lagMu.Lock()
	defer fd.lagMu.Unlock()
	if gen == fd.gen.Load() {
		fd.settle(st, now)
	}
}

// settle takes st off the streams yet to acknowledge the current value;
// the last one completes the fan-out, from adoption to that last ACK.
func (fd *feed) settle(st *stream, now time.Time) {
	if _, ok := fd.unacked[st]; !ok {
		return
	}
	delete(fd.unacked, st)
	if len(fd.unacked) == 0 {
		fd.lag.Observe(now.Sub(fd.since).Seconds())
	}
}

// prime gives feeds that have no value yet their first one, as a cold Check
// would: st's request waits for it (with the stream's context, and no longer
// than the server runs), so a new subscription is answered with a token.
func (s *Server) prime(st *stream, feeds []*feed) {
	if len(feeds) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(st.ctx)
	defer cancel()
	defer context.AfterFunc(s.ctx, cancel)()
	for _, fd := range feeds {
		s.mu.Lock()
		cred, epoch, timing := fd.cred, fd.epoch, fd.timing
		s.mu.Unlock()
		value, lease, err := cred.Value(ctx, false)
		if ctx.Err() != nil {
			// This stream went away: its failure says nothing about the
			// token. Another subscriber, or the timer, decides the value.
			s.mu.Lock()
			if !fd.has && !fd.dropped && !s.stopped {
				s.wakeSoonLocked(fd)
			}
			s.mu.Unlock()
			return
		}
		s.adopt(fd, epoch, timing, value, lease, err)
	}
}

// adopt makes the outcome of a Value call the feed's value and sets the
// next timer. A token replaces the value when it is newer; a failure keeps
// a usable token (the timer pushes the fail-closed value at its usable
// end), and only a feed that never had a value is given the fail-closed one
// at once ("none can be had"). timing is the feed's when the call began: a
// lease from before a Resync is re-timed.
func (s *Server) adopt(fd *feed, epoch, timing uint64, value string, lease cache.Lease, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fd.dropped || s.stopped || epoch != fd.epoch {
		if !fd.dropped && !s.stopped {
			s.wakeSoonLocked(fd) // the configuration changed meanwhile: ask again under the new one
		}
		return
	}
	now := s.opts.Now()
	if err == nil {
		// A lease computed before a reload raised expiry_margin ends no
		// later than the margin in force says.
		if until := lease.Token.Expiry.Add(-s.opts.Tokens.ExpiryMargin()); until.Before(lease.Until) {
			lease.Until = until
		}
	}
	if err == nil && now.Before(lease.Until) {
		fd.retryAt = time.Time{}
		older := fd.has && !fd.failClosed && fd.adoptedEpoch == epoch && lease.Token.Expiry.Before(fd.lease.Token.Expiry)
		if !older { // an older token whose call finished late does not undo a newer one
			recovered := fd.has && fd.failClosed
			fd.lease, fd.adoptedEpoch = lease, epoch
			if !fd.has || fd.failClosed || value != fd.value {
				fd.value, fd.failClosed, fd.has = value, false, true
				s.changeLocked(fd, now)
			}
			if recovered {
				s.log.Info("token available again; pushed to subscribers",
					zap.String("credential", fd.name), zap.Int("subscribers", len(fd.streams)))
			}
		}
	} else {
		fd.retryAt = retryTime(err, now)
		// A value adopted under an older configuration (another identity,
		// or a token invalidated since) must not outlive the failure: only
		// a usable token of this epoch is kept until its usable end.
		if !fd.has || fd.adoptedEpoch != epoch {
			fd.value, fd.failClosed, fd.has, fd.adoptedEpoch = "", true, true, epoch
			s.changeLocked(fd, now)
			s.log.Warn("no token for new SDS subscribers; pushed the fail-closed value",
				zap.String("credential", fd.name), zap.Error(err), zap.Time("retry_at", fd.retryAt))
		}
	}
	if timing != fd.timing {
		s.resyncSoonLocked(fd) // its refresh point may be stale too: ask the cache for the current deadlines
		return
	}
	s.scheduleLocked(fd, now)
}

// retryTime is when to ask again after err: the cache's retry time when it
// gives one, else retryFloor from now.
func retryTime(err error, now time.Time) time.Time {
	if ue, ok := errors.AsType[*cache.UnavailableError](err); ok && ue.RetryAt.After(now) {
		return ue.RetryAt
	}
	return now.Add(retryFloor)
}

// changeLocked publishes a new value to every member identity and starts
// timing its fan-out.
func (s *Server) changeLocked(fd *feed, now time.Time) {
	if fd.failClosed {
		fd.secret = failClosed(fd.name)
	} else {
		fd.secret = secret(fd.name, fd.value)
	}
	fd.lagMu.Lock()
	fd.gen.Add(1)
	fd.since = now
	fd.unacked = maps.Clone(fd.streams)
	if fd.unacked == nil {
		fd.unacked = map[*stream]struct{}{}
	}
	fd.lagMu.Unlock()
	for id := range fd.members {
		s.publishLocked(id, fd)
	}
}

// scheduleLocked sets the feed's timer for its next event: the refresh
// point (or, after a failed refresh, the retry time), but never past the
// usable end; when fail-closed, the retry time.
func (s *Server) scheduleLocked(fd *feed, now time.Time) {
	fd.stopTimer()
	var at time.Time
	if fd.failClosed {
		at = fd.retryAt
	} else {
		at = fd.lease.RefreshAt
		if !fd.retryAt.IsZero() {
			at = fd.retryAt
		}
		if fd.lease.Until.Before(at) {
			at = fd.lease.Until
		}
	}
	if fd.cred.Polled() && now.Add(pollEvery).Before(at) {
		at = now.Add(pollEvery)
	}
	if !at.After(now) {
		// Due already (a lease that came back due): wait a little, but
		// never past the usable end.
		at = now.Add(retryFloor)
		if !fd.failClosed && fd.lease.Until.After(now) && fd.lease.Until.Before(at) {
			at = fd.lease.Until
		}
	}
	fd.stop = s.opts.AfterFunc(at.Sub(now), func() { s.fire(fd) })
}

// wakeSoonLocked runs the feed's work now, in the background.
func (s *Server) wakeSoonLocked(fd *feed) {
	fd.stopTimer()
	if s.stopped {
		return // Stop is waiting for work: add none
	}
	s.work.Add(1)
	go func() {
		defer s.work.Done()
		s.wake(fd)
	}()
}

// fire is the timer's function: it hands the work to a goroutine counted
// in s.work, so Stop can wait for it.
func (s *Server) fire(fd *feed) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped || fd.dropped {
		return
	}
	fd.stop = nil
	s.wakeSoonLocked(fd)
}

// wake does what the feed's time asks: at the usable end without a
// replacement it pushes the fail-closed value; when a refresh is due (or
// the value is fail-closed, or may have changed in place) it asks the
// cache for a fresh token.
func (s *Server) wake(fd *feed) {
	s.mu.Lock()
	if s.stopped || fd.dropped {
		s.mu.Unlock()
		return
	}
	now := s.opts.Now()
	if fd.has && !fd.failClosed && !now.Before(fd.lease.Until) {
		fd.value, fd.failClosed = "", true
		s.changeLocked(fd, now)
		s.log.Warn("token reached its usable end without a replacement; pushed the fail-closed value",
			zap.String("credential", fd.name), zap.Int("subscribers", len(fd.streams)),
			zap.Time("usable_until", fd.lease.Until))
	}
	due := !fd.has || fd.failClosed || !now.Before(fd.lease.RefreshAt) ||
		fd.cred.Polled() || fd.epoch != fd.adoptedEpoch
	cred, epoch, timing := fd.cred, fd.epoch, fd.timing
	if !due {
		s.scheduleLocked(fd, now)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	value, lease, err := cred.Value(s.ctx, true)
	s.adopt(fd, epoch, timing, value, lease, err)
}
