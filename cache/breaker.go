package cache

import (
	"errors"
	"sync"
	"time"
)

// ErrBreakerOpen is returned instead of calling the shared tier while its
// circuit breaker is open.
var ErrBreakerOpen = errors.New("shared cache circuit breaker open")

// breakerState is the circuit breaker's state; its value is the metric value.
type breakerState int

const (
	breakerClosed   breakerState = 0 // calls go through
	breakerHalfOpen breakerState = 1 // one probe call goes through
	breakerOpen     breakerState = 2 // calls fail at once
)

func (s breakerState) String() string {
	switch s {
	case breakerClosed:
		return "closed"
	case breakerHalfOpen:
		return "half_open"
	default:
		return "open"
	}
}

// breaker stops calling a failing dependency: after threshold consecutive
// failures it opens for cooldown, then lets one probe through (half-open);
// the probe's outcome closes or re-opens it. onChange runs once per state
// change, never per call, and outside the lock.
type breaker struct {
	threshold int
	cooldown  time.Duration
	now       func() time.Time
	onChange  func(from, to breakerState, lastErr error)

	mu       sync.Mutex // guards the fields below
	state    breakerState
	failures int
	openedAt time.Time
	probing  bool
}

// allow reports whether a call may go ahead. A true answer must be followed
// by exactly one done.
func (b *breaker) allow() bool {
	b.mu.Lock()
	switch b.state {
	case breakerClosed:
		b.mu.Unlock()
		return true
	case breakerOpen:
		if b.now().Sub(b.openedAt) < b.cooldown {
			b.mu.Unlock()
			return false
		}
		b.state, b.probing = breakerHalfOpen, true
		b.mu.Unlock()
		b.onChange(breakerOpen, breakerHalfOpen, nil)
		return true
	default: // half-open: only the one probe
		if b.probing {
			b.mu.Unlock()
			return false
		}
		b.probing = true
		b.mu.Unlock()
		return true
	}
}

// done records the outcome of an allowed call (err nil: the dependency answered).
func (b *breaker) done(err error) {
	b.mu.Lock()
	from := b.state
	if err == nil {
		b.failures, b.probing = 0, false
		b.state = breakerClosed
	} else {
		b.failures++
		b.probing = false
		if b.state == breakerHalfOpen || b.failures >= b.threshold {
			b.state, b.openedAt = breakerOpen, b.now()
		}
	}
	to := b.state
	b.mu.Unlock()
	if from != to {
		b.onChange(from, to, err)
	}
}

func (b *breaker) current() breakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}
