package slots

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// detail is a test Detail: the id it was put with, and the long key.
type detail struct{ id, long string }

func (d *detail) LongKey() string      { return d.long }
func (d *detail) SetLongKey(id string) { d.long = id }

func TestSlotIsOneCacheLine(t *testing.T) {
	if n := unsafe.Sizeof(slot{}); n != 64 {
		t.Fatalf("slot is %d bytes, want 64 (one cache line)", n)
	}
	for n := 0; n < 200_000; n = n*9/8 + 1 {
		st := New[*detail](n)
		if a := uintptr(unsafe.Pointer(&st.slots[0])); a%64 != 0 {
			t.Fatalf("array of %d slots at %#x: not aligned to a cache line", len(st.slots), a)
		}
	}
}

// TestSlotTableMatchesAMap drives a slot table with random puts and removes beside a Go
// map and compares them after every step. Hashes come from a few values only, so probe
// runs are long, collide, wrap around the array's end, and deletion has to shift them.
func TestSlotTableMatchesAMap(t *testing.T) {
	for _, tc := range []struct{ hashes, names int }{{1, 40}, {3, 60}, {1 << 20, 3000}} {
		hashes := tc.hashes
		rng := rand.New(rand.NewPCG(1, uint64(hashes)))
		st := New[*detail](0)
		want := map[string]int64{}
		hashOf := func(c string) uint32 {
			h := uint32(0)
			for _, b := range []byte(c) {
				h = h*31 + uint32(b)
			}
			// Spread the few values over the whole range, the top one included, so some
			// home slots are the array's last.
			return uint32(uint64(h%uint32(hashes)) * (1<<32 - 1) / uint64(max(hashes-1, 1)))
		}
		name := func() string {
			n := rng.IntN(tc.names)
			c := "c" + strconv.Itoa(n)
			if n%4 == 0 {
				c += strings.Repeat("x", InlineKey) // too long for the slot
			}
			return c
		}
		for step := range 10_000 {
			c := name()
			if rng.IntN(3) == 0 {
				_, had := want[c]
				if got := st.Remove(hashOf(c), c); got != had {
					t.Fatalf("%d hashes, step %d: remove(%q) = %v, want %v", hashes, step, c, got, had)
				}
				delete(want, c)
			} else {
				limit := rng.Int64N(1000)
				st = st.Put(hashOf(c), c, Entry{Limit: limit}, &detail{id: c})
				want[c] = limit
			}
			if rng.IntN(50) == 0 {
				st = st.Clone() // grows, shrinks or copies
			}
			if st.count != len(want) {
				t.Fatalf("%d hashes, step %d: count %d, want %d", hashes, step, st.count, len(want))
			}
			if 4*st.count > 3*len(st.slots) {
				t.Fatalf("%d hashes, step %d: %d throttles in %d slots", hashes, step, st.count, len(st.slots))
			}
			if step%97 == 0 || hashes < 4 {
				seen := 0
				for i := range st.All() {
					c, e, d := st.Customer(i), st.Entry(i), *st.Detail(i)
					if e.Limit != want[c] || d.id != c {
						t.Fatalf("%d hashes, step %d: slot of %q holds limit %d id %q, want %d", hashes, step, c, e.Limit, d.id, want[c])
					}
					if st.Find(hashOf(c), c) != i {
						t.Fatalf("%d hashes, step %d: find(%q) does not reach its slot", hashes, step, c)
					}
					seen++
				}
				if seen != len(want) {
					t.Fatalf("%d hashes, step %d: %d slots in use, want %d", hashes, step, seen, len(want))
				}
				if c := name(); (st.Find(hashOf(c), c) >= 0) != hasKey(want, c) {
					t.Fatalf("%d hashes, step %d: find(%q) disagrees with the map", hashes, step, c)
				}
			}
		}
	}
}

func hasKey(m map[string]int64, k string) bool { _, ok := m[k]; return ok }
