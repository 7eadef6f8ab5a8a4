// Package testclock is a manual clock for tests: the clock seams
// (cache.Options.Now, ClientCredentials.Now, …) take its Now, and a test
// moves time with Advance instead of sleeping. Timers made with AfterFunc
// fire inside Advance, so a test knows they have run when Advance returns.
package testclock

import (
	"sort"
	"sync"
	"time"
)

// Clock is a manual clock, safe for concurrent use.
type Clock struct {
	mu     sync.Mutex // guards t and timers
	t      time.Time
	timers []*Timer
}

// New returns a clock reading t.
func New(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d, then calls, in the order of their
// deadlines and in the caller's goroutine, every timer's function whose
// deadline has been reached (a timer a function sets up is included when it
// is due too).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
	for {
		t := c.nextDue()
		if t == nil {
			return
		}
		t.f()
	}
}

// nextDue removes and returns the earliest timer that is due, or nil.
func (c *Clock) nextDue() *Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	sort.SliceStable(c.timers, func(i, j int) bool { return c.timers[i].at.Before(c.timers[j].at) })
	if len(c.timers) == 0 || c.timers[0].at.After(c.t) {
		return nil
	}
	t := c.timers[0]
	c.timers = c.timers[1:]
	return t
}

// Timer is a pending AfterFunc call.
type Timer struct {
	c  *Clock
	at time.Time
	f  func()
}

// AfterFunc calls f once the clock has advanced by d: from within the
// Advance that reaches it, or at once, in the caller's goroutine, when d <= 0.
func (c *Clock) AfterFunc(d time.Duration, f func()) *Timer {
	t := &Timer{c: c, f: f}
	if d <= 0 {
		f()
		return t
	}
	c.mu.Lock()
	t.at = c.t.Add(d)
	c.timers = append(c.timers, t)
	c.mu.Unlock()
	return t
}

// Stop cancels the timer; it reports whether the call was still pending.
func (t *Timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	for i, p := range t.c.timers {
		if p == t {
			t.c.timers = append(t.c.timers[:i], t.c.timers[i+1:]...)
			return true
		}
	}
	return false
}

// Pending is how many timers have not fired or been stopped.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}
