package main

import (
	"os"
	"runtime/debug"
	"runtime/metrics"
)

// releaseLoadMemory runs once after a configuration is put in force (at
// start and after each applied reload). It returns to the OS the pages the
// load grew the heap to — the parsed file and the previous configuration's
// filter and sources are garbage now, and the runtime would otherwise keep
// them resident for minutes — and sets the GC goal for the heap that is
// now live (gcPercentFor). One forced collection per load; requests are
// never on this path.
func releaseLoadMemory() {
	debug.FreeOSMemory()
	if userTunedGC {
		return
	}
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() == metrics.KindUint64 {
		debug.SetGCPercent(gcPercentFor(s[0].Value.Uint64()))
	}
}

// userTunedGC: GOGC or GOMEMLIMIT set by the operator wins over gcPercentFor.
var userTunedGC = os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != ""

// GC goal. At GOGC=100 the heap grows to twice what is live before a
// collection and RSS follows it: with 100,000 credentials (~250 MB live)
// that is ~250 MB of garbage held resident. tokenbroker's live heap is
// mostly configuration that lives until the next reload, and a Check
// allocates ~500 bytes, so a smaller proportional headroom costs little:
// the headroom stays at least gcHeadroom (a collection at most every
// ~130,000 Checks), and small configurations keep GOGC=100.
const (
	gcHeadroom   = 64 << 20
	minGCPercent = 25
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
