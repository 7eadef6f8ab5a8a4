// Package logthrottle bounds log lines about events that anyone can cause,
// or that a fault causes for every key at once: one line per interval, with
// the count of the events it stands for, instead of one line per event.
package logthrottle

import (
	"sync/atomic"
	"time"
)

// Throttle lets one event through per interval and counts the rest. The
// zero value is ready (its first event is let through); it is safe for
// concurrent use, and small enough to keep one per credential.
type Throttle struct {
	next atomic.Int64 // Unix nanoseconds before which events are only counted
	n    atomic.Int64 // events since the last one let through
}

// Take counts one event at now and reports whether to log it, with the
// number of events the line stands for (itself and those held back since
// the previous line); the next line comes no sooner than every after it.
func (t *Throttle) Take(now time.Time, every time.Duration) (int64, bool) {
	t.n.Add(1)
	next := t.next.Load()
	if now.UnixNano() < next || !t.next.CompareAndSwap(next, now.Add(every).UnixNano()) {
		return 0, false
	}
	return t.n.Swap(0), true
}
