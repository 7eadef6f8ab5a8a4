package main

import (
	"os"
	"runtime/debug"
)

// releaseLoadMemory runs once after a configuration is put in force (at
// start and after each applied reload). It returns to the OS the pages the
// load grew the heap to — the parsed file and the previous configuration's
// filter and sources are garbage now, and the runtime would otherwise keep
// them resident for minutes — and sets the GC goal for the heap that is
// now live (gcPercentFor; gcgoal.go keeps it there as the heap grows). One
// forced collection per load; requests are never on this path.
func releaseLoadMemory() {
	debug.FreeOSMemory()
	if userTunedGC {
		return
	}
	debug.SetGCPercent(gcPercentFor(liveHeap()))
}

// userTunedGC: GOGC or GOMEMLIMIT set by the operator wins over gcPercentFor.
var userTunedGC = os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != ""

// GC goal. At GOGC=100 the heap grows to twice what is live before a
// collection and RSS follows it: with 100,000 credentials (~110–210 MB live)
// that is as much garbage held resident. tokenbroker's live heap is mostly
// configuration and cached tokens that live for minutes to hours, and a
// Check allocates ~500 bytes, so a small headroom costs little: gcHeadroom
// is a collection every ~65,000 Checks, each marking the live heap (by
// gctrace ~100 ms of CPU at 75 MB live, ~140 ms at 210 MB: ~4–5% of a core at
// 25,000 Checks/s). The headroom is never less than minGCPercent of the live
// heap, so a much larger heap is not marked ever more often per Check; small
// heaps keep GOGC=100. 32 MiB, not 64: with 100k broker clients (~75 MB
// live) 64 MiB held RSS at 174 MB, 32 MiB at 144 MB; 15%, not 25%: 100k
// credentials with 1 KB tokens (~210 MB live) held 315 MB at 25%, 298 MB at
// 15%. The GC's share of the CPU over a whole fill stayed 3–9% (BENCHMARKS.md).
const (
	gcHeadroom   = 32 << 20
	minGCPercent = 15
)

// gcPercentFor is the GOGC for a live heap of live bytes: 100, lowered so
// that the headroom is gcHeadroom once the live heap exceeds it, and never
// below minGCPercent.
func gcPercentFor(live uint64) int {
	if live <= gcHeadroom {
		return 100
	}
	return max(minGCPercent, int(gcHeadroom*100/live))
}
