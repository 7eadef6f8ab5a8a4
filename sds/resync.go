package sds

import "go.uber.org/zap"

// Resync re-times every feed after the cache's settings changed (a reload
// of cache.expiry_margin or cache.refresh_ahead; call it once the cache has
// them). A feed's timers were set from its token's deadlines under the old
// settings: a raised margin moves the usable end earlier, so without this a
// subscriber could hold the value past its new usable end.
//
// Each feed asks the cache again for the token it holds, without minting
// while that token is usable under the new settings, and sets its refresh
// and end-of-life timers from the new deadlines. Nothing is pushed and no
// subscriber fails closed while its value stays valid. A token already due
// under the new refresh point is refreshed now; one already past its new
// usable end is replaced by the fail-closed value at once, then refreshed as
// at any usable end.
func (s *Server) Resync() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	margin := s.opts.Tokens.ExpiryMargin()
	s.log.Info("cache settings changed; re-timing push feeds", zap.Int("feeds", len(s.feeds)), zap.Duration("expiry_margin", margin))
	for _, fd := range s.feeds {
		fd.timing++ // a Value call in flight lands with the old deadlines: adopt re-times it
		if !fd.has || fd.failClosed {
			continue // no token held: nothing to re-time (a fail-closed feed keeps its retry time)
		}
		// The new usable end holds from now, before the cache answers: if
		// asking fails, the value still ends there and not at the old end.
		if until := fd.lease.Token.Expiry.Add(-margin); until.Before(fd.lease.Until) {
			fd.lease.Until = until
		}
		s.resyncSoonLocked(fd)
	}
}

// resyncSoonLocked runs resync for the feed in the background, counted in
// s.work as the timers' work is.
func (s *Server) resyncSoonLocked(fd *feed) {
	fd.stopTimer()
	if s.stopped {
		return
	}
	s.work.Add(1)
	go func() {
		defer s.work.Done()
		s.resync(fd)
	}()
}

// resync takes the feed's token with the deadlines in force from the cache
// and re-schedules it.
func (s *Server) resync(fd *feed) {
	s.mu.Lock()
	if s.stopped || fd.dropped {
		s.mu.Unlock()
		return
	}
	if !fd.has || fd.failClosed || fd.epoch != fd.adoptedEpoch || !s.opts.Now().Before(fd.lease.Until) {
		// Nothing usable to re-time (or past its new usable end already):
		// the feed's ordinary work decides, failing closed where due.
		s.mu.Unlock()
		s.wake(fd)
		return
	}
	cred, epoch, timing := fd.cred, fd.epoch, fd.timing
	s.mu.Unlock()
	// Not fresh: the held token, usable under the new settings, comes back
	// with its new deadlines and costs no mint.
	value, lease, err := cred.Value(s.ctx, false)
	s.adopt(fd, epoch, timing, value, lease, err)
	if err != nil || !s.opts.Now().Before(lease.RefreshAt) {
		// Due under the new refresh point, or the token could not be had:
		// refresh now (wake fails closed first if the usable end passed),
		// rather than a retry interval later.
		s.wake(fd)
	}
}
