package broker

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

type record struct{ k string }

// TestIndexMatchesAMap: random inserts and removes (growth, deleted slots
// cleared in place, shrinking) find exactly what a map holds, and the table
// stays at most 7/8 full and, once grown, at least 1/8.
func TestIndexMatchesAMap(t *testing.T) {
	x := newIndex(func(r *record) string { return r.k })
	want := map[string]*record{}
	rng := rand.New(rand.NewPCG(1, 2))
	check := func(step int) {
		t.Helper()
		if x.len() != len(want) {
			t.Fatalf("step %d: %d records, want %d", step, x.len(), len(want))
		}
		if n := len(x.ctrl); n > 0 && (8*(x.used+x.dead) > 7*n || (n > minIndex && 8*x.used < n)) {
			t.Fatalf("step %d: %d used + %d deleted in %d slots", step, x.used, x.dead, n)
		}
	}
	for step := range 200000 {
		// Grow to ~20k, churn at that size, then drain: every path of the table.
		k := strconv.Itoa(rng.IntN(30000))
		insert := step < 60000 && rng.IntN(3) > 0 || step < 140000 && rng.IntN(2) == 0
		switch r, ok := want[k]; {
		case insert && !ok:
			r = &record{k: k}
			x.insert(r)
			want[k] = r
		case !insert && ok:
			if got := x.remove(k); got != r {
				t.Fatalf("step %d: remove(%s) = %v, want %v", step, k, got, r)
			}
			delete(want, k)
		case !insert && !ok:
			if got := x.remove(k); got != nil {
				t.Fatalf("step %d: remove(%s) of an absent key = %v", step, k, got)
			}
		}
		if got := x.get(k); got != want[k] {
			t.Fatalf("step %d: get(%s) = %v, want %v", step, k, got, want[k])
		}
		check(step)
	}
	for k, r := range want {
		if x.get(k) != r {
			t.Fatalf("get(%s) lost its record", k)
		}
		x.remove(k)
		delete(want, k)
	}
	check(-1)
	if len(x.ctrl) > minIndex {
		t.Errorf("an emptied index keeps %d slots", len(x.ctrl))
	}
}

// TestIndexSize: 100,000 records, the broker's bound, fit in 2^17 slots
// (~10 B each with the control byte), not 2^18; and an LRU at its bound,
// one insert and one remove at a time, rehashes only now and then.
func TestIndexSize(t *testing.T) {
	x := newIndex(func(r *record) string { return r.k })
	for i := range maxClients {
		x.insert(&record{k: strconv.Itoa(i)})
	}
	if len(x.ctrl) != 1<<17 {
		t.Fatalf("%d records in %d slots, want %d", x.len(), len(x.ctrl), 1<<17)
	}
	rehashes, size := 0, &x.slots[0]
	for i := maxClients; i < 3*maxClients; i++ {
		x.insert(&record{k: strconv.Itoa(i)})
		x.remove(strconv.Itoa(i - maxClients))
		if &x.slots[0] != size {
			rehashes, size = rehashes+1, &x.slots[0]
		}
	}
	if len(x.ctrl) != 1<<17 || rehashes > 20 {
		t.Errorf("churn at the bound: %d slots, %d rehashes over %d inserts", len(x.ctrl), rehashes, 2*maxClients)
	}

	// Churn one record below the 7/8 mark: clearing deleted slots in place
	// would free only one, and every insert would rehash the whole table.
	x = newIndex(func(r *record) string { return r.k })
	full := 7*(1<<10)/8 - 1
	for i := range full {
		x.insert(&record{k: strconv.Itoa(i)})
	}
	rehashes, size = 0, &x.slots[0]
	for i := full; i < full+10000; i++ {
		x.insert(&record{k: strconv.Itoa(i)})
		x.remove(strconv.Itoa(i - full))
		if &x.slots[0] != size {
			rehashes, size = rehashes+1, &x.slots[0]
		}
	}
	if rehashes > 100 {
		t.Errorf("churn just below 7/8: %d rehashes over 10000 inserts", rehashes)
	}
}
