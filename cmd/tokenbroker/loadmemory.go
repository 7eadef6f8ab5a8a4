package main

import "runtime/debug"

// releaseLoadMemory returns to the OS the pages a (re)load grew the heap
// to: the YAML node tree and the previous configuration's filter and
// sources are garbage now, and the runtime would otherwise keep them
// resident for minutes (a 100,000-credential file made RSS stay ~4× the
// live heap). It costs one forced collection per load, which loads are
// rare enough to afford; requests are never on this path.
func releaseLoadMemory() { debug.FreeOSMemory() }
