package broker

import "hash/maphash"

// index finds records by a string key the record holds itself (keyOf). It
// is an open-addressing hash table whose slot is one pointer and one control
// byte: at the broker's 100,000 clients and keys a map[string]*E costs
// ~40 B per entry (a 24-byte slot, control bytes, up to half of it empty
// after a growth), this ~10 B, and the key's string header is not repeated.
//
// The hash is seeded per table, so client ids chosen by whoever sends them
// cannot be picked to collide; the load stays at most 7/8, so a lookup that
// finds nothing scans a few dozen control bytes at worst on average.
type index[E any] struct {
	seed  maphash.Seed
	keyOf func(*E) string
	ctrl  []uint8 // per slot: ctrlEmpty, ctrlDeleted, or ctrlFull|7 bits of the hash
	slots []*E
	used  int // slots holding a record
	dead  int // ctrlDeleted slots: they end no probe, so they count towards the load
}

const (
	ctrlEmpty   = 0
	ctrlDeleted = 1
	ctrlFull    = 0x80
	minIndex    = 16 // slots of a table's smallest size
)

func newIndex[E any](keyOf func(*E) string) index[E] {
	return index[E]{seed: maphash.MakeSeed(), keyOf: keyOf}
}

func (x *index[E]) len() int { return x.used }

// probe is where k's search starts and the control byte its slot carries.
func (x *index[E]) probe(k string) (int, uint8) {
	h := maphash.String(x.seed, k)
	return int(h & uint64(len(x.ctrl)-1)), ctrlFull | uint8(h>>57)
}

// find returns the slot holding k, or -1.
func (x *index[E]) find(k string) int {
	if x.used == 0 {
		return -1
	}
	mask := len(x.ctrl) - 1
	for i, tag := x.probe(k); ; i = (i + 1) & mask {
		switch c := x.ctrl[i]; {
		case c == ctrlEmpty:
			return -1
		case c == tag && x.keyOf(x.slots[i]) == k:
			return i
		}
	}
}

// get returns k's record, or nil.
func (x *index[E]) get(k string) *E {
	if i := x.find(k); i >= 0 {
		return x.slots[i]
	}
	return nil
}

// insert adds e, whose key must be absent.
func (x *index[E]) insert(e *E) {
	if 8*(x.used+x.dead+1) > 7*len(x.ctrl) {
		// Deleted slots worth a sixteenth of the table are cleared in place;
		// fewer, and the table doubles. Either way many inserts pass before
		// the next rehash, also for an LRU evicting one entry per insert.
		size := sizeFor(x.used + 1)
		if 16*x.dead < len(x.ctrl) {
			size = max(size, 2*len(x.ctrl))
		}
		x.rehash(size)
	}
	x.place(e)
	x.used++
}

// place puts e in the first free slot of its probe; the count is the caller's.
func (x *index[E]) place(e *E) {
	mask := len(x.ctrl) - 1
	i, tag := x.probe(x.keyOf(e))
	for x.ctrl[i]&ctrlFull != 0 {
		i = (i + 1) & mask
	}
	if x.ctrl[i] == ctrlDeleted {
		x.dead--
	}
	x.ctrl[i], x.slots[i] = tag, e
}

// remove drops k's record and returns it, or nil if there was none.
func (x *index[E]) remove(k string) *E {
	i := x.find(k)
	if i < 0 {
		return nil
	}
	e := x.slots[i]
	x.slots[i] = nil
	x.used--
	if x.ctrl[(i+1)&(len(x.ctrl)-1)] == ctrlEmpty {
		x.ctrl[i] = ctrlEmpty // no probe continues past i
	} else {
		x.ctrl[i] = ctrlDeleted
		x.dead++
	}
	if len(x.ctrl) > minIndex && 8*x.used < len(x.ctrl) {
		x.rehash(sizeFor(x.used)) // a table that emptied gives its slots back
	}
	return e
}

// sizeFor is the smallest table that holds n records at most 7/8 full.
func sizeFor(n int) int {
	size := minIndex
	for 8*n > 7*size {
		size *= 2
	}
	return size
}

// rehash moves every record to a table of size slots, dropping the deleted ones.
func (x *index[E]) rehash(size int) {
	old := x.slots
	x.ctrl, x.slots, x.dead = make([]uint8, size), make([]*E, size), 0
	for _, e := range old {
		if e != nil {
			x.place(e)
		}
	}
}
