package throttle

import (
	"iter"
	"time"
)

// inlineKey is the longest customer id a slot holds in its own bytes. A Lookup of such a
// customer reads one cache line of the table and nothing else; a longer id is compared
// through the slot's detail, one more load from memory.
const inlineKey = 25

// longKey in slot.keyLen marks an id longer than inlineKey, kept in detail.customer.
const longKey = 0xff

// slot is one throttle in a shard's open-addressed array. It fills exactly one 64-byte
// cache line (TestSlotIsOneCacheLine), and arrays of slots are line-aligned (Go's size
// classes for powers of two and whole pages are), so a hit on a short customer id costs
// a single load from memory. With 100,000 throttles, Go's own maps cost three dependent
// loads (control word, slot, key bytes), 150-500 ns on these machines.
type slot struct {
	hash    uint32 // high half of the customer's hash: picks the home slot
	used    bool
	mode    Mode
	keyLen  uint8 // bytes of key in use, or longKey
	key     [inlineKey]byte
	limit   int64
	window  time.Duration
	expires int64
	detail  *ruleDetail
}

func (s *slot) is(customer string) bool {
	if len(customer) <= inlineKey {
		return int(s.keyLen) == len(customer) && string(s.key[:len(customer)]) == customer
	}
	return s.keyLen == longKey && s.detail.customer == customer
}

// customer returns the slot's customer id (a copy for inline ids: not for the hot path).
func (s *slot) customer() string {
	if s.keyLen == longKey {
		return s.detail.customer
	}
	return string(s.key[:s.keyLen])
}

// keyBytes is the id as bytes without a copy, to hash it again.
func (s *slot) keyBytes() []byte {
	if s.keyLen == longKey {
		return []byte(s.detail.customer)
	}
	return s.key[:s.keyLen]
}

func (s *slot) rule() Rule {
	return Rule{Limit: s.limit, Window: s.window, Mode: s.mode, expires: s.expires, detail: s.detail}
}

func (s *slot) fill(hash uint32, customer string, r Rule) {
	*s = slot{hash: hash, used: true, mode: r.Mode, limit: r.Limit, window: r.Window, expires: r.expires, detail: r.detail}
	if len(customer) <= inlineKey {
		s.keyLen = uint8(copy(s.key[:], customer))
		r.detail.customer = ""
	} else {
		s.keyLen = longKey
		r.detail.customer = customer
	}
}

// slotTable is a linear-probing hash table of slots. Its home slot comes from the high
// 32 bits of the customer's hash by multiply-shift, so its length need not be a power of
// two and can track the count closely (load between 2/3 and 3/4). Deletion shifts the
// following run back, so there are no deletion markers and probe runs stay short.
//
// A shard's readers only ever see a slotTable that no one writes any more: writers
// change a table in place only while it is unpublished, and otherwise change a copy.
type slotTable struct {
	slots []slot
	count int
}

// sizeFor is the slot count for n throttles: room for half as many again, at least 8.
func sizeFor(n int) int { return max(8, n+n/2+1) }

func newSlotTable(n int) *slotTable { return &slotTable{slots: make([]slot, sizeFor(n))} }

func (t *slotTable) home(hash uint32) int {
	return int(uint64(hash) * uint64(len(t.slots)) >> 32)
}

func (t *slotTable) next(i int) int {
	if i++; i == len(t.slots) {
		return 0
	}
	return i
}

// find returns the customer's slot, or nil.
func (t *slotTable) find(hash uint32, customer string) *slot {
	if i := t.index(hash, customer); i >= 0 {
		return &t.slots[i]
	}
	return nil
}

// index returns the index of the customer's slot, or -1.
func (t *slotTable) index(hash uint32, customer string) int {
	for i := t.home(hash); ; i = t.next(i) {
		s := &t.slots[i]
		if !s.used {
			return -1
		}
		if s.hash == hash && s.is(customer) {
			return i
		}
	}
}

// all yields every slot in use.
func (t *slotTable) all() iter.Seq[*slot] {
	return func(yield func(*slot) bool) {
		for i := range t.slots {
			if t.slots[i].used && !yield(&t.slots[i]) {
				return
			}
		}
	}
}

// put sets the customer's rule in place and returns the table, or a larger copy when
// t had no room for another throttle.
func (t *slotTable) put(hash uint32, customer string, r Rule) *slotTable {
	if s := t.find(hash, customer); s != nil {
		s.fill(hash, customer, r)
		return t
	}
	if 4*(t.count+1) > 3*len(t.slots) {
		t = t.resized(t.count + 1)
	}
	i := t.home(hash)
	for t.slots[i].used {
		i = t.next(i)
	}
	t.slots[i].fill(hash, customer, r)
	t.count++
	return t
}

// remove deletes the customer's slot in place and reports whether it was there.
func (t *slotTable) remove(hash uint32, customer string) bool {
	hole := t.index(hash, customer)
	if hole < 0 {
		return false
	}
	// Shift back every slot of the run after the hole that may live there: one whose
	// home is not cyclically within (hole, j].
	for j := t.next(hole); t.slots[j].used; j = t.next(j) {
		h := t.home(t.slots[j].hash)
		if (hole < j && (h <= hole || h > j)) || (hole > j && h <= hole && h > j) {
			t.slots[hole] = t.slots[j]
			hole = j
		}
	}
	t.slots[hole] = slot{}
	t.count--
	return true
}

// resized returns a copy of t sized for n throttles.
func (t *slotTable) resized(n int) *slotTable {
	c := newSlotTable(n)
	for s := range t.all() {
		i := c.home(s.hash)
		for c.slots[i].used {
			i = c.next(i)
		}
		c.slots[i] = *s
		c.count++
	}
	return c
}

// clone returns a copy of t that can take one more throttle without growing.
func (t *slotTable) clone() *slotTable {
	if 4*(t.count+1) > 3*len(t.slots) || 3*t.count < len(t.slots) {
		return t.resized(t.count + 1) // grow, or shrink one that deletions left sparse
	}
	return &slotTable{slots: append([]slot(nil), t.slots...), count: t.count}
}
