package cache

import (
	"time"

	"github.com/tokenbroker/tokenbroker/credential"
)

// Settings are what a running cache can change: how many tokens it holds,
// and when a token stops being handed out and starts being refreshed.
type Settings struct {
	MaxTokens    int64         // default 100000
	ExpiryMargin time.Duration // a token is never returned within this of its expiry
	RefreshAhead float64       // refresh when less than this fraction of the usable lifetime is left (default 0.2)
}

func (s Settings) withDefaults() Settings {
	if s.MaxTokens <= 0 {
		s.MaxTokens = 100000
	}
	if s.RefreshAhead <= 0 || s.RefreshAhead >= 1 {
		s.RefreshAhead = 0.2
	}
	return s
}

// A token's deadlines are computed from the token and the settings in force
// at every lookup, not stored with it: that costs a few nanoseconds per hit,
// saves 48 B per key, and makes new settings apply to every held token at
// the next lookup with nothing to rebuild and no mint.

// until is the last instant tok may be handed out (expiry − margin).
func (s *Settings) until(tok *credential.Token) time.Time { return tok.Expiry.Add(-s.ExpiryMargin) }

// refreshAt is when a replacement for tok is due: RefreshAhead of its usable
// life before until. Issued is set for every held token (see hold).
func (s *Settings) refreshAt(tok *credential.Token) time.Time {
	until := s.until(tok)
	window := until.Sub(tok.Issued)
	if window <= 0 {
		return until
	}
	return tok.Issued.Add(window - time.Duration(float64(window)*s.RefreshAhead))
}

// Reconfigure applies s to the running cache; the next lookup decides with
// it, for the tokens already held as well. A smaller MaxTokens evicts idle
// keys down to it at once (never one with a mint in flight or leased by
// push mode); a larger one lets more keys in.
func (t *Tokens) Reconfigure(s Settings) error {
	s = s.withDefaults()
	if s == *t.level() {
		return nil
	}
	t.settings.Store(&s)
	t.bound("")
	return nil
}

// Settings returns the settings in force.
func (t *Tokens) Settings() Settings { return *t.level() }

func (t *Tokens) level() *Settings { return t.settings.Load() }

// BreakerReset says on m that the shared tier is a new client now: its
// breaker starts closed, whatever the replaced client's breaker was.
func (m *L2Metrics) BreakerReset() { m.state.Set(float64(breakerClosed)) }
