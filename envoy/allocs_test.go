package envoy_test

import (
	"context"
	"testing"
)

// maxHitAllocs is the target for a warm Check in process (BENCHMARKS.md).
const maxHitAllocs = 10

// TestCheckHitAllocations guards the hit path's allocation budget, so a
// change that adds allocations fails here rather than only in a benchmark
// nobody reran. The race detector changes allocation counts: skipped there.
func TestCheckHitAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under -race; run without it (make bench reports them too)")
	}
	as, req := warmServer(t)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(200, func() { _, _ = as.Check(ctx, req) })
	if allocs > maxHitAllocs {
		t.Fatalf("warm Check allocates %.0f times, budget %d", allocs, maxHitAllocs)
	}
	t.Logf("warm Check: %.0f allocations (budget %d)", allocs, maxHitAllocs)
}
