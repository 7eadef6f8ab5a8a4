package main

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// The GC goal follows the live heap. releaseLoadMemory sets it once per
// load, but most of a large deployment's heap arrives after the load: the
// tokens of 100,000 credentials, or the state of 100,000 broker clients,
// which exist only once traffic has asked for them. Set once from the
// load-time heap, GOGC stays near 100 and the process runs at twice that
// later heap (100k broker clients: ~76 MB live, ~190 MB RSS). So after every
// collection the goal is set again from what the collection found live: the
// headroom stays gcHeadroom whatever the heap grows or shrinks to.
//
// The hook is a cleanup on an unreachable sentinel, re-armed each time it
// runs: it runs once per GC cycle, on the runtime's cleanup goroutine, never
// on a request's path, and costs one metrics read — nothing in proportion
// to credentials or clients, and nothing at all while no collection runs.

// gcGoal re-applies gcPercentFor after each GC cycle.
type gcGoal struct {
	live    func() uint64 // the live heap after the last cycle
	set     func(percent int)
	last    int // the percent last set; touched only by the cleanup goroutine
	stopped atomic.Bool
}

type gcSentinel struct{ _ *int } // a pointer field keeps it out of the tiny allocator, whose blocks are freed late

func (g *gcGoal) arm() {
	runtime.AddCleanup(new(gcSentinel), func(g *gcGoal) {
		if g.stopped.Load() {
			return
		}
		g.retune()
		g.arm()
	}, g)
}

func (g *gcGoal) retune() {
	if p := gcPercentFor(g.live()); p != g.last {
		g.last = p
		g.set(p)
	}
}

func (g *gcGoal) stop() { g.stopped.Store(true) }

var followLiveHeapOnce sync.Once

// followLiveHeap starts the process's gcGoal (once; serve calls it). An
// operator's GOGC or GOMEMLIMIT wins: then nothing is started.
func followLiveHeap() {
	if userTunedGC {
		return
	}
	followLiveHeapOnce.Do(func() {
		g := &gcGoal{live: liveHeap, set: func(p int) { debug.SetGCPercent(p) }, last: -1}
		g.arm()
	})
}

// liveHeap is the heap the last GC cycle marked live.
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
