// Package slots is the hash table behind a throttle table's Lookup: the hot path of every
// event.
//
// Why it exists: with many throttles, a Go map costs three dependent loads from memory
// per lookup (control word, slot, key bytes); a slot costs one. BenchmarkLookup in
// pkg/throttle compares the table with a sync.Map, and BenchmarkIngestRatio in
// services/ingestion measures what it is worth end to end.
package slots

import (
	"iter"
	"time"
)

// InlineKey is the longest customer id a slot holds in its own bytes. A lookup of such a
// customer compares the id within the slot's cache line; a longer id is kept in the
// slot's detail (Detail.LongKey), two more loads from memory.
const InlineKey = 25

// longKey in slot.keyLen marks an id longer than InlineKey.
const longKey = 0xff

// Entry is what a lookup reads of one throttle.
type Entry struct {
	Mode    uint8
	Limit   int64
	Window  time.Duration
	Expires int64 // Unix milliseconds
	Created int64 // Unix milliseconds
}

// Detail is the rest of a throttle, kept beside the slots: one pointer per slot. It
// holds a customer id too long for the slot.
type Detail interface {
	LongKey() string
	SetLongKey(string)
}

// slot holds what a lookup reads of one throttle, in exactly one 64-byte cache line.
//
// A slot holds no pointer, so arrays of slots are allocated without the 8-byte header Go
// puts before larger objects with pointers, and start on a line: Go's size classes from
// 512 bytes up are multiples of 64, and larger objects start on a page
// (TestSlotIsOneCacheLine). The details live in a parallel array.
type slot struct {
	hash    uint32 // high half of the customer's hash: picks the home slot
	used    bool
	mode    uint8
	keyLen  uint8 // bytes of key in use, or longKey
	key     [InlineKey]byte
	limit   int64
	window  time.Duration
	expires int64
	created int64
}

// Table is a linear-probing hash table of slots, addressed by index. Its home slot comes
// from a 32-bit hash by multiply-shift, so its length need not be a power of two and can
// track the count closely (load between 2/3 and 3/4). Deletion shifts the following run
// back, so there are no deletion markers and probe runs stay short.
//
// A Table is not safe for concurrent writes; readers may share one that no one writes
// any more (the throttle table copies a visible one before changing it: Clone).
type Table[D Detail] struct {
	slots   []slot
	details []D // details[i] belongs to slots[i]
	count   int
}

// sizeFor is the slot count for n throttles: room for half as many again, at least 8.
func sizeFor(n int) int { return max(8, n+n/2+1) }

// New returns a table with room for n throttles.
func New[D Detail](n int) *Table[D] {
	size := sizeFor(n)
	return &Table[D]{slots: make([]slot, size), details: make([]D, size)}
}

// Len is the number of throttles held.
func (t *Table[D]) Len() int { return t.count }

func (t *Table[D]) home(hash uint32) int {
	return int(uint64(hash) * uint64(len(t.slots)) >> 32)
}

func (t *Table[D]) next(i int) int {
	if i++; i == len(t.slots) {
		return 0
	}
	return i
}

// Find returns the index of the customer's slot, or -1.
func (t *Table[D]) Find(hash uint32, customer string) int {
	for i := t.home(hash); ; i = t.next(i) {
		s := &t.slots[i]
		if !s.used {
			return -1
		}
		if s.hash == hash && t.is(i, customer) {
			return i
		}
	}
}

func (t *Table[D]) is(i int, customer string) bool {
	s := &t.slots[i]
	if len(customer) <= InlineKey {
		return int(s.keyLen) == len(customer) && string(s.key[:len(customer)]) == customer
	}
	return s.keyLen == longKey && t.details[i].LongKey() == customer
}

// Expires is slot i's expiry, without copying the rest.
func (t *Table[D]) Expires(i int) int64 { return t.slots[i].expires }

// Hash is slot i's hash.
func (t *Table[D]) Hash(i int) uint32 { return t.slots[i].hash }

// Entry returns slot i's entry.
func (t *Table[D]) Entry(i int) Entry {
	s := &t.slots[i]
	return Entry{Mode: s.mode, Limit: s.limit, Window: s.window, Expires: s.expires, Created: s.created}
}

// Detail returns the address of slot i's detail, without loading it: a lookup takes it
// and reads only the slot.
func (t *Table[D]) Detail(i int) *D { return &t.details[i] }

// Customer returns the id in slot i (a copy for inline ids: not for the hot path).
func (t *Table[D]) Customer(i int) string {
	if s := &t.slots[i]; s.keyLen != longKey {
		return string(s.key[:s.keyLen])
	}
	return t.details[i].LongKey()
}

// KeyBytes is the id in slot i as bytes, without a copy, to hash it again.
func (t *Table[D]) KeyBytes(i int) []byte {
	if s := &t.slots[i]; s.keyLen != longKey {
		return s.key[:s.keyLen]
	}
	return []byte(t.details[i].LongKey())
}

// All yields the index of every slot in use.
func (t *Table[D]) All() iter.Seq[int] {
	return func(yield func(int) bool) {
		for i := range t.slots {
			if t.slots[i].used && !yield(i) {
				return
			}
		}
	}
}

// fill makes slot i the customer's, with entry e and detail d, which it takes over: a
// long id is kept there.
func (t *Table[D]) fill(i int, hash uint32, customer string, e Entry, d D) {
	s := &t.slots[i]
	*s = slot{hash: hash, used: true, mode: e.Mode, limit: e.Limit, window: e.Window, expires: e.Expires, created: e.Created}
	if len(customer) <= InlineKey {
		s.keyLen = uint8(copy(s.key[:], customer))
		d.SetLongKey("")
	} else {
		s.keyLen = longKey
		d.SetLongKey(customer)
	}
	t.details[i] = d
}

// Put sets the customer's entry in place and returns the table, or a larger copy when t
// had no room for another throttle.
func (t *Table[D]) Put(hash uint32, customer string, e Entry, d D) *Table[D] {
	if i := t.Find(hash, customer); i >= 0 {
		t.fill(i, hash, customer, e, d)
		return t
	}
	if 4*(t.count+1) > 3*len(t.slots) {
		t = t.resized(t.count + 1)
	}
	i := t.home(hash)
	for t.slots[i].used {
		i = t.next(i)
	}
	t.fill(i, hash, customer, e, d)
	t.count++
	return t
}

// Remove deletes the customer's slot in place and reports whether it was there.
func (t *Table[D]) Remove(hash uint32, customer string) bool {
	hole := t.Find(hash, customer)
	if hole < 0 {
		return false
	}
	// Shift back every slot of the run after the hole that may live there: one whose
	// home is not cyclically within (hole, j].
	var none D
	for j := t.next(hole); t.slots[j].used; j = t.next(j) {
		h := t.home(t.slots[j].hash)
		if (hole < j && (h <= hole || h > j)) || (hole > j && h <= hole && h > j) {
			t.slots[hole], t.details[hole] = t.slots[j], t.details[j]
			hole = j
		}
	}
	t.slots[hole], t.details[hole] = slot{}, none
	t.count--
	return true
}

// resized returns a copy of t sized for n throttles.
func (t *Table[D]) resized(n int) *Table[D] {
	c := New[D](n)
	for j := range t.All() {
		i := c.home(t.slots[j].hash)
		for c.slots[i].used {
			i = c.next(i)
		}
		c.slots[i], c.details[i] = t.slots[j], t.details[j]
		c.count++
	}
	return c
}

// Clone returns a copy of t that can take one more throttle without growing.
func (t *Table[D]) Clone() *Table[D] {
	if 4*(t.count+1) > 3*len(t.slots) || 3*t.count < len(t.slots) {
		return t.resized(t.count + 1) // grow, or shrink one that deletions left sparse
	}
	return &Table[D]{slots: append([]slot(nil), t.slots...), details: append([]D(nil), t.details...), count: t.count}
}
