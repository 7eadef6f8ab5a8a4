package broker

import (
	"slices"
	"testing"
)

// item is a minimal entry for the intrusive LRU.
type item struct {
	k     string
	links links[item]
}

func (i *item) lru() *links[item] { return &i.links }

func keysOf(l *lru[item, *item]) []string {
	var out []string
	for _, e := range l.values() {
		out = append(out, e.k)
	}
	return out
}

// TestLRU: the intrusive LRU evicts the least recently used entry past its
// bound, get (not peek) refreshes, remove and resize tell the eviction hook.
func TestLRU(t *testing.T) {
	var evicted []string
	l := newLRU(3, func(i *item) string { return i.k }, func(i *item) { evicted = append(evicted, i.k) })
	for _, k := range []string{"0", "1", "2"} {
		l.add(&item{k: k})
	}
	if got := keysOf(&l); !slices.Equal(got, []string{"0", "1", "2"}) {
		t.Fatalf("oldest first: %v", got)
	}
	l.get("0")  // 0 is the newest now
	l.peek("1") // 1 stays the oldest
	l.add(&item{k: "3"})
	if !slices.Equal(evicted, []string{"1"}) || !slices.Equal(keysOf(&l), []string{"2", "0", "3"}) {
		t.Fatalf("after a fourth: evicted %v, left %v; want [1] and [2 0 3]", evicted, keysOf(&l))
	}
	l.remove("0")
	l.remove("42") // absent: nothing happens
	if !slices.Equal(evicted, []string{"1", "0"}) || !slices.Equal(keysOf(&l), []string{"2", "3"}) {
		t.Fatalf("after remove: evicted %v, left %v", evicted, keysOf(&l))
	}
	l.resize(1)
	if !slices.Equal(evicted, []string{"1", "0", "2"}) || !slices.Equal(keysOf(&l), []string{"3"}) || l.len() != 1 {
		t.Fatalf("after resize: evicted %v, left %v", evicted, keysOf(&l))
	}
	if _, ok := l.peek("2"); ok {
		t.Error("an evicted entry is still found")
	}
	l.remove("3")
	if l.len() != 0 || l.newest != nil || l.oldest != nil || len(l.values()) != 0 {
		t.Errorf("emptied table: %d entries, newest %v, oldest %v", l.len(), l.newest, l.oldest)
	}
}
