package config

import (
	"runtime/debug"
	"sync"
)

// loadGCPercent is the GC goal while a file is parsed. Parsing makes a
// YAML node tree several times the file's size that is garbage moments
// later; at the default GOGC=100 the heap may grow to twice what is live
// before a collection, and the pages it grew to stay resident (RSS) long
// after. A lower goal keeps the load peak nearer what is live, for more
// collections during a load that happens once per start or reload (at 20
// a 100,000-credential file took twice as long to load as at 50).
const loadGCPercent = 50

// loadMu serialises the GC goal's change and restoration: two loads at once
// must not restore each other's lowered value.
var loadMu sync.Mutex

// withLoadGC runs parse with the GC goal lowered to loadGCPercent (never
// raised: GOGC=off or a lower GOGC stays), then restores it.
func withLoadGC[T any](parse func() (T, error)) (T, error) {
	loadMu.Lock()
	defer loadMu.Unlock()
	prev := debug.SetGCPercent(loadGCPercent)
	if prev < loadGCPercent { // -1 is GOGC=off
		debug.SetGCPercent(prev)
	}
	defer debug.SetGCPercent(prev)
	return parse()
}
