package cache

import (
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/credential"
)

// TestShardAgainstMap drives one shard with random inserts, deletes and
// lookups against a map. Tags come from 12 values, so keys share tags
// (only the id tells them apart), probe runs are long and wrap around the
// array's end, and every delete shifts cells back. After each step every
// key is found with its own slot, token and hits, and no empty cell sits
// between a cell and its home (a lookup would stop there and miss it).
func TestShardAgainstMap(t *testing.T) {
	seed := maphash.MakeSeed()
	tagOf := func(id string) uint32 { return 1<<31 | uint32(maphash.String(seed, id)%12)*5 }
	rng := rand.New(rand.NewPCG(7, 13))
	var sh shard
	ref := map[string]*slot{}
	toks := map[*slot]*credential.Token{}
	hits := map[*slot]uint64{}
	maxN, maxLen := 0, 0
	for step := range 6_000 {
		id := fmt.Sprint("k", rng.IntN(300))
		tag := tagOf(id)
		i := sh.find(tag, id)
		s := ref[id]
		if (i >= 0) != (s != nil) {
			t.Fatalf("step %d: find(%q) = %d, in map %v", step, id, i, s != nil)
		}
		switch op := rng.IntN(10); {
		case s == nil && op < 6:
			s = &slot{id: id}
			sh.insert(tag, s)
			ref[id] = s
			if i = sh.find(tag, id); i < 0 {
				t.Fatalf("step %d: %q not found after insert", step, id)
			}
			tok := &credential.Token{Value: id, Expiry: time.Unix(int64(step), 0), Issued: time.Unix(int64(step)-60, 0)}
			c := &sh.cells[i]
			c.cur, c.kind, c.exp, c.iss = tok, stampWall, tok.Expiry.UnixNano(), tok.Issued.UnixNano()
			toks[s] = tok
		case s != nil && op < 4:
			if got := sh.cells[i].hits.Load(); got != hits[s] {
				t.Fatalf("step %d: %q has %d hits, want %d", step, id, got, hits[s])
			}
			sh.delete(uint32(i))
			delete(ref, id)
		case s != nil:
			sh.cells[i].hits.Add(1)
			hits[s]++
		}
		maxN, maxLen = max(maxN, sh.n), max(maxLen, len(sh.cells))
		if sh.n != len(ref) {
			t.Fatalf("step %d: n = %d, map has %d", step, sh.n, len(ref))
		}
		for id, s := range ref {
			i := sh.find(tagOf(id), id)
			if i < 0 {
				t.Fatalf("step %d: %q lost", step, id)
			}
			c, tok := &sh.cells[i], toks[s]
			if c.owner != s || c.cur != tok || c.hits.Load() != hits[s] ||
				c.kind != stampWall || c.exp != tok.Expiry.UnixNano() || c.iss != tok.Issued.UnixNano() {
				t.Fatalf("step %d: %q mixed up (index %d)", step, id, i)
			}
		}
		mask := uint32(len(sh.cells) - 1)
		for j := range sh.cells {
			c := &sh.cells[j]
			if c.tag == 0 {
				if *c != (cell{}) {
					t.Fatalf("step %d: empty cell %d keeps state", step, j)
				}
				continue
			}
			for k := home(c.tag, mask); k != uint32(j); k = (k + 1) & mask {
				if sh.cells[k].tag == 0 {
					t.Fatalf("step %d: cell %d unreachable: empty cell %d after its home", step, j, k)
				}
			}
		}
	}
	if maxN < 100 || maxLen*maxLoad < maxN*8 {
		t.Fatalf("%d cells for up to %d keys: the test never grew the array far", maxLen, maxN)
	}
}

// TestShardShrinks: a shard that held thousands of keys and now holds a
// few gives its cells back (halving at 1/8 full), keeps every key it
// still has with its token and hits, and grows again when keys return.
func TestShardShrinks(t *testing.T) {
	var sh shard
	tagOf := func(id string) uint32 { return 1<<31 | uint32(hashID(id)>>32) }
	toks := map[string]*credential.Token{}
	for i := range 5_000 {
		id := fmt.Sprint("k", i)
		s := &slot{id: id}
		sh.insert(tagOf(id), s)
		c := &sh.cells[sh.find(tagOf(id), id)]
		c.cur = &credential.Token{Value: id}
		c.hits.Store(uint64(i))
		toks[id] = c.cur
	}
	full := len(sh.cells)
	for i := 10; i < 5_000; i++ {
		id := fmt.Sprint("k", i)
		sh.delete(uint32(sh.find(tagOf(id), id)))
		delete(toks, id)
	}
	if len(sh.cells) > 128 || len(sh.cells)*8 > full {
		t.Fatalf("%d cells left for %d keys (%d at the most)", len(sh.cells), sh.n, full)
	}
	for i := range 10 {
		id := fmt.Sprint("k", i)
		j := sh.find(tagOf(id), id)
		if j < 0 || sh.cells[j].cur != toks[id] || sh.cells[j].hits.Load() != uint64(i) || sh.cells[j].owner.id != id {
			t.Fatalf("%q lost or mixed up by the shrink (index %d)", id, j)
		}
	}
	for i := 10; i < 5_000; i++ {
		id := fmt.Sprint("k", i)
		sh.insert(tagOf(id), &slot{id: id})
	}
	if sh.n != 5_000 || len(sh.cells) != full {
		t.Fatalf("%d keys in %d cells after growing back, want 5000 in %d", sh.n, len(sh.cells), full)
	}
}

// TestTableConcurrentReaders: while one writer inserts, stores tokens,
// forgets and evicts (growing shards and shifting cells), readers hit
// keys at random. A hit only ever returns its own key's token, and no hit
// is lost when its cell moves: hits counted by readers equal the hits the
// table hands back for the slots that left plus those still in it. The
// writer stores tokens of two lifetimes, one already past its usable end,
// so a hit that read one token's deadlines with another token would hand
// out an unusable one or misjudge its refresh.
func TestTableConcurrentReaders(t *testing.T) {
	var tb table
	set := Settings{}.withDefaults()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	expiry := now.Add(time.Hour)
	ids := make([]string, 3000)
	for i := range ids {
		ids[i] = fmt.Sprintf("%064x", i)
	}
	newSlot := func(k Key) *slot { return &slot{id: k.ID, name: k.Name} }
	usable := func(tok *credential.Token) bool { return now.Before(set.until(tok)) }

	var counted atomic.Uint64
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for r := range 3 {
		readers.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				key := Key{ID: ids[rng.IntN(len(ids))]}
				if tok, due := tb.hit(key.hashOf(), key.ID, now, &set); tok != nil {
					counted.Add(1)
					if tok.Value != key.ID {
						t.Errorf("hit for %q returned %q's token", key.ID, tok.Value)
						return
					}
					if !now.Before(set.until(tok)) || due != !now.Before(set.refreshAt(tok)) {
						t.Errorf("hit for %q: usable/due decided on another token's deadlines", key.ID)
						return
					}
				}
			}
		})
	}

	ref := map[string]*slot{}
	var returned uint64
	gone := func(s *slot, hits uint64) {
		if ref[s.id] != s {
			t.Errorf("evicted %q, not in the table", s.id)
		}
		delete(ref, s.id)
		returned += hits
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 40_000 {
		id := ids[rng.IntN(len(ids))]
		switch rng.IntN(10) {
		case 0, 1, 2, 3, 4, 5:
			s, inserted := tb.pin(Key{ID: id}, newSlot)
			if inserted {
				ref[id] = s
			} else if ref[id] != s {
				t.Fatalf("pin(%q) found a slot not in the map", id)
			}
			exp := expiry
			if rng.IntN(2) == 0 {
				exp = now.Add(set.ExpiryMargin / 2) // not usable now
			}
			tb.store(s, &credential.Token{Value: id, Expiry: exp, Issued: now.Add(-time.Hour)})
			s.unpin()
			if inserted {
				tb.bound(2000, id, usable, gone)
			}
		case 6:
			if s := tb.get(id); s != nil {
				tb.store(s, nil) // an invalidation
			}
		default:
			s, hits := tb.remove(id)
			if s != ref[id] {
				t.Fatalf("remove(%q) returned a slot not in the map", id)
			}
			delete(ref, id)
			returned += hits
		}
	}
	close(stop)
	readers.Wait()

	if got := tb.total.Load(); got != int64(len(ref)) || got > 2000 {
		t.Fatalf("total %d, map %d, max_tokens 2000", got, len(ref))
	}
	var walked int
	var kept uint64
	tb.each(func(s *slot, cur *credential.Token, hits uint64) {
		walked++
		kept += hits
		if ref[s.id] != s || cur != nil && cur.Value != s.id {
			t.Errorf("walk found %q out of place", s.id)
		}
	})
	if walked != len(ref) {
		t.Fatalf("walk saw %d slots, map has %d", walked, len(ref))
	}
	if returned+kept != counted.Load() {
		t.Fatalf("readers counted %d hits; the table returned %d and keeps %d", counted.Load(), returned, kept)
	}
	if counted.Load() == 0 {
		t.Fatal("no reader ever hit: the test proves nothing")
	}
}
