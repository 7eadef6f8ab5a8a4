package cache

import (
	"time"

	"github.com/tokenbroker/tokenbroker/credential"
)

// A hit decides whether the held token may go out, and whether its refresh
// is due, from its cell alone: the token's Expiry and Issued are copied
// into the cell as two integers when the token is stored, so spread over
// 100k keys a hit costs one CPU cache miss (the cell) instead of three (the
// cell, then the token's two lines). The integers must give exactly the
// answer Settings.until and Settings.refreshAt give on the token itself,
// and time.Time compares on its monotonic reading when both times carry
// one and on the wall clock otherwise. So a stamp is either:
//   - stampMono: both times carry a monotonic reading; each is kept as its
//     distance from monoBase, which is monotonic arithmetic (time.Sub);
//   - stampWall: neither does (a token read back from the shared tier, a
//     test clock); each is kept as Unix nanoseconds, when in range;
//   - stampExact: anything else (one of each, a year outside what Unix
//     nanoseconds hold); the hit then reads the token, as before.
//
// A clock whose now has no monotonic reading meets a stampMono token only
// in tests; that too decides on the token.
const (
	stampExact uint32 = iota
	stampMono
	stampWall
)

// monoBase is a time with a monotonic reading; stampMono values count from it.
var monoBase = time.Now()

// wallLimit bounds the seconds from 1970 a stampWall value may hold (1843
// to 2096): Unix nanoseconds fit in an int64 from 1678 to 2262, and this
// keeps the difference of two of them, less a margin, from overflowing too.
const wallLimit = 4e9

// hasMono reports whether t carries a monotonic reading (Round(0) strips it).
func hasMono(t time.Time) bool { return t != t.Round(0) }

func wallOK(t time.Time) bool { s := t.Unix(); return s > -wallLimit && s < wallLimit }

// stampOf is tok's expiry and issue instant as a cell keeps them.
func stampOf(tok *credential.Token) (kind uint32, exp, iss int64) {
	if tok == nil {
		return stampExact, 0, 0
	}
	em, im := hasMono(tok.Expiry), hasMono(tok.Issued)
	switch {
	case em && im:
		// Sub saturates at ±292 years; two readings of one process's clock
		// are nowhere near, and Add (which until uses) keeps them exact.
		return stampMono, int64(tok.Expiry.Sub(monoBase)), int64(tok.Issued.Sub(monoBase))
	case !em && !im && wallOK(tok.Expiry) && wallOK(tok.Issued):
		return stampWall, tok.Expiry.UnixNano(), tok.Issued.UnixNano()
	}
	return stampExact, 0, 0
}

// decide is Settings.until and Settings.refreshAt on a stamp: whether a
// token stamped (kind, exp, iss) may be handed out at now, and whether its
// refresh is due. exact reports that the stamp cannot answer for this now
// (see above); the caller then decides on the token.
func (s *Settings) decide(kind uint32, exp, iss int64, now time.Time) (ok, due, exact bool) {
	var n int64
	switch kind {
	case stampMono:
		if !hasMono(now) {
			return false, false, true
		}
		n = int64(now.Sub(monoBase))
	case stampWall:
		if !wallOK(now) {
			return false, false, true
		}
		// now's own monotonic reading does not matter: the token has none,
		// so time.Time compares wall clocks.
		n = now.UnixNano()
	default:
		return false, false, true
	}
	until := exp - int64(s.ExpiryMargin)
	if n >= until {
		return false, false, false
	}
	refresh := until
	if window := until - iss; window > 0 {
		refresh = iss + window - int64(time.Duration(float64(window)*s.RefreshAhead))
	}
	return true, n >= refresh, false
}
