package jobstore

// idIndex maps the hash of a finished job's id to the job's place in the
// memory store's ring. It is an open-addressing table with linear probing,
// kept at most half full, that deletes by shifting entries back (no
// tombstones). It holds no pointers, so the garbage collector does not scan
// it, and a lookup usually reads one cache line, where Go's map read two
// (its control word, then the slot) on a table too large for the cache.
type idIndex struct {
	slots []idSlot // len is a power of two, or 0
	n     int
}

// idSlot is one entry; pos is the place in the ring plus one, 0 when the
// slot is empty.
type idSlot struct {
	hash uint64
	pos  uint32
}

const minIndexSlots = 64

// find returns the slot of hash, or the empty slot where it would go.
func (x *idIndex) find(hash uint64) (i uint64, found bool) {
	mask := uint64(len(x.slots) - 1)
	for i = hash & mask; ; i = (i + 1) & mask {
		switch s := &x.slots[i]; {
		case s.pos == 0:
			return i, false
		case s.hash == hash:
			return i, true
		}
	}
}

// get returns the place of hash.
func (x *idIndex) get(hash uint64) (pos int, ok bool) {
	if x.n == 0 {
		return 0, false
	}
	i, found := x.find(hash)
	if !found {
		return 0, false
	}
	return int(x.slots[i].pos - 1), true
}

// put sets the place of hash, replacing the one it had.
func (x *idIndex) put(hash uint64, pos int) {
	if 2*(x.n+1) > len(x.slots) {
		x.grow()
	}
	i, found := x.find(hash)
	if !found {
		x.n++
	}
	x.slots[i] = idSlot{hash: hash, pos: uint32(pos) + 1}
}

// deleteIfAt removes hash if its place is pos (else a newer job took its
// hash, and the entry is that job's).
func (x *idIndex) deleteIfAt(hash uint64, pos int) {
	if x.n == 0 {
		return
	}
	i, found := x.find(hash)
	if !found || x.slots[i].pos != uint32(pos)+1 {
		return
	}
	// Shift back the entries of the run after i that may sit in i: an
	// entry at j whose home slot h is not cyclically within (i, j].
	mask := uint64(len(x.slots) - 1)
	for j := (i + 1) & mask; x.slots[j].pos != 0; j = (j + 1) & mask {
		h := x.slots[j].hash & mask
		if (i <= j && i < h && h <= j) || (i > j && (i < h || h <= j)) {
			continue
		}
		x.slots[i] = x.slots[j]
		i = j
	}
	x.slots[i] = idSlot{}
	x.n--
}

func (x *idIndex) grow() {
	old := x.slots
	x.slots = make([]idSlot, max(minIndexSlots, 2*len(old)))
	x.n = 0
	for _, s := range old {
		if s.pos != 0 {
			i, _ := x.find(s.hash)
			x.slots[i] = s
			x.n++
		}
	}
}
