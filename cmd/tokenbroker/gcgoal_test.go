package main

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// TestGCGoalFollowsEachCycle: after each collection the goal is set again
// from the live heap then, and only when it changes; once stopped, no cycle
// sets it any more.
func TestGCGoalFollowsEachCycle(t *testing.T) {
	var live atomic.Uint64
	live.Store(4 * gcHeadroom)
	set := make(chan int, 16)
	g := &gcGoal{live: live.Load, set: func(p int) { set <- p }, last: -1}
	g.arm()
	t.Cleanup(g.stop)
	want := func(p int) {
		t.Helper()
		deadline := time.After(30 * time.Second) // a bound on a broken hook, not a synchronisation
		for {
			runtime.GC()
			select {
			case got := <-set:
				if got != p {
					t.Fatalf("GOGC set to %d, want %d", got, p)
				}
				return
			case <-deadline:
				t.Fatalf("no cycle set GOGC to %d", p)
			default:
				runtime.Gosched()
			}
		}
	}
	want(25) // 4 × headroom live: a quarter
	live.Store(10 << 20)
	want(100) // the heap shrank: back to the default
	live.Store(2 * gcHeadroom)
	want(50)
	// Unchanged live heap: more cycles set nothing. The hook re-arms on
	// every cycle, so once a later change is set, the cycles before it ran
	// and set nothing in between.
	runtime.GC()
	runtime.GC()
	live.Store(4 * gcHeadroom)
	want(25)
	if len(set) != 0 {
		t.Fatalf("extra settings: %d", len(set))
	}
}
