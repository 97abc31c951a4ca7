package throttle

import (
	"iter"
	"time"
)

// inlineKey is the longest customer id a slot holds in its own bytes. A Lookup of such a
// customer compares the id within the slot's cache line; a longer id is compared through
// the rule's detail, two more loads from memory.
const inlineKey = 25

// longKey in slot.keyLen marks an id longer than inlineKey, kept in ruleDetail.customer.
const longKey = 0xff

// slot holds what a Lookup reads of one throttle, in exactly one 64-byte cache line.
// With 100,000 throttles, Go's own maps cost three dependent loads from memory (control
// word, slot, key bytes), 150-500 ns on these machines; a slot costs one.
//
// A slot holds no pointer, so arrays of slots are allocated without the 8-byte header Go
// puts before larger objects with pointers, and start on a line: Go's size classes from
// 512 bytes up are multiples of 64, and larger objects start on a page
// (TestSlotIsOneCacheLine). The rule's detail pointer lives in a parallel array.
type slot struct {
	hash    uint32 // high half of the customer's hash: picks the home slot
	used    bool
	mode    Mode
	keyLen  uint8 // bytes of key in use, or longKey
	key     [inlineKey]byte
	limit   int64
	window  time.Duration
	expires int64
	created int64
}

// slotTable is a linear-probing hash table of slots. Its home slot comes from the high
// 32 bits of the customer's hash by multiply-shift, so its length need not be a power of
// two and can track the count closely (load between 2/3 and 3/4). Deletion shifts the
// following run back, so there are no deletion markers and probe runs stay short.
//
// A shard's readers only ever see a slotTable that no one writes any more: writers
// change a table in place only while it is not yet visible, and otherwise change a copy.
type slotTable struct {
	slots   []slot
	details []*ruleDetail // details[i] belongs to slots[i]
	count   int
}

// sizeFor is the slot count for n throttles: room for half as many again, at least 8.
func sizeFor(n int) int { return max(8, n+n/2+1) }

func newSlotTable(n int) *slotTable {
	size := sizeFor(n)
	return &slotTable{slots: make([]slot, size), details: make([]*ruleDetail, size)}
}

func (t *slotTable) home(hash uint32) int {
	return int(uint64(hash) * uint64(len(t.slots)) >> 32)
}

func (t *slotTable) next(i int) int {
	if i++; i == len(t.slots) {
		return 0
	}
	return i
}

// find returns the index of the customer's slot, or -1.
func (t *slotTable) find(hash uint32, customer string) int {
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

func (t *slotTable) is(i int, customer string) bool {
	s := &t.slots[i]
	if len(customer) <= inlineKey {
		return int(s.keyLen) == len(customer) && string(s.key[:len(customer)]) == customer
	}
	return s.keyLen == longKey && t.details[i].customer == customer
}

// rule returns the rule in slot i.
func (t *slotTable) rule(i int) Rule {
	s := &t.slots[i]
	return Rule{Limit: s.limit, Window: s.window, Mode: s.mode, expires: s.expires, created: s.created, detail: &t.details[i]}
}

// customer returns the id in slot i (a copy for inline ids: not for the hot path).
func (t *slotTable) customer(i int) string {
	if s := &t.slots[i]; s.keyLen != longKey {
		return string(s.key[:s.keyLen])
	}
	return t.details[i].customer
}

// keyBytes is the id in slot i as bytes, without a copy, to hash it again.
func (t *slotTable) keyBytes(i int) []byte {
	if s := &t.slots[i]; s.keyLen != longKey {
		return s.key[:s.keyLen]
	}
	return []byte(t.details[i].customer)
}

// all yields the index of every slot in use.
func (t *slotTable) all() iter.Seq[int] {
	return func(yield func(int) bool) {
		for i := range t.slots {
			if t.slots[i].used && !yield(i) {
				return
			}
		}
	}
}

// fill makes slot i the customer's, with rule r and its detail d, which it takes over:
// a long id is kept there.
func (t *slotTable) fill(i int, hash uint32, customer string, r Rule, d *ruleDetail) {
	s := &t.slots[i]
	*s = slot{hash: hash, used: true, mode: r.Mode, limit: r.Limit, window: r.Window, expires: r.expires, created: r.created}
	if len(customer) <= inlineKey {
		s.keyLen = uint8(copy(s.key[:], customer))
		d.customer = ""
	} else {
		s.keyLen = longKey
		d.customer = customer
	}
	t.details[i] = d
}

// put sets the customer's rule in place and returns the table, or a larger copy when
// t had no room for another throttle.
func (t *slotTable) put(hash uint32, customer string, r Rule, d *ruleDetail) *slotTable {
	if i := t.find(hash, customer); i >= 0 {
		t.fill(i, hash, customer, r, d)
		return t
	}
	if 4*(t.count+1) > 3*len(t.slots) {
		t = t.resized(t.count + 1)
	}
	i := t.home(hash)
	for t.slots[i].used {
		i = t.next(i)
	}
	t.fill(i, hash, customer, r, d)
	t.count++
	return t
}

// remove deletes the customer's slot in place and reports whether it was there.
func (t *slotTable) remove(hash uint32, customer string) bool {
	hole := t.find(hash, customer)
	if hole < 0 {
		return false
	}
	// Shift back every slot of the run after the hole that may live there: one whose
	// home is not cyclically within (hole, j].
	for j := t.next(hole); t.slots[j].used; j = t.next(j) {
		h := t.home(t.slots[j].hash)
		if (hole < j && (h <= hole || h > j)) || (hole > j && h <= hole && h > j) {
			t.slots[hole], t.details[hole] = t.slots[j], t.details[j]
			hole = j
		}
	}
	t.slots[hole], t.details[hole] = slot{}, nil
	t.count--
	return true
}

// resized returns a copy of t sized for n throttles.
func (t *slotTable) resized(n int) *slotTable {
	c := newSlotTable(n)
	for j := range t.all() {
		i := c.home(t.slots[j].hash)
		for c.slots[i].used {
			i = c.next(i)
		}
		c.slots[i], c.details[i] = t.slots[j], t.details[j]
		c.count++
	}
	return c
}

// clone returns a copy of t that can take one more throttle without growing.
func (t *slotTable) clone() *slotTable {
	if 4*(t.count+1) > 3*len(t.slots) || 3*t.count < len(t.slots) {
		return t.resized(t.count + 1) // grow, or shrink one that deletions left sparse
	}
	return &slotTable{slots: append([]slot(nil), t.slots...), details: append([]*ruleDetail(nil), t.details...), count: t.count}
}
