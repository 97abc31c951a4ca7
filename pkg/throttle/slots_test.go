package throttle

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
)

func TestSlotIsOneCacheLine(t *testing.T) {
	if n := unsafe.Sizeof(slot{}); n != 64 {
		t.Fatalf("slot is %d bytes, want 64 (one cache line)", n)
	}
	for n := 0; n < 200_000; n = n*9/8 + 1 {
		st := newSlotTable(n)
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
		st := newSlotTable(0)
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
				c += strings.Repeat("x", inlineKey) // too long for the slot
			}
			return c
		}
		for step := range 10_000 {
			c := name()
			if rng.IntN(3) == 0 {
				_, had := want[c]
				if got := st.remove(hashOf(c), c); got != had {
					t.Fatalf("%d hashes, step %d: remove(%q) = %v, want %v", hashes, step, c, got, had)
				}
				delete(want, c)
			} else {
				limit := rng.Int64N(1000)
				r, d := Record{ID: c, Limit: limit}.split()
				st = st.put(hashOf(c), c, r, d)
				want[c] = limit
			}
			if rng.IntN(50) == 0 {
				st = st.clone() // grows, shrinks or copies
			}
			if st.count != len(want) {
				t.Fatalf("%d hashes, step %d: count %d, want %d", hashes, step, st.count, len(want))
			}
			if 4*st.count > 3*len(st.slots) {
				t.Fatalf("%d hashes, step %d: %d throttles in %d slots", hashes, step, st.count, len(st.slots))
			}
			if step%97 == 0 || hashes < 4 {
				seen := 0
				for i := range st.all() {
					c, r := st.customer(i), st.rule(i)
					if r.Limit != want[c] || r.ID() != c {
						t.Fatalf("%d hashes, step %d: slot of %q holds limit %d id %q, want %d", hashes, step, c, r.Limit, r.ID(), want[c])
					}
					if st.find(hashOf(c), c) != i {
						t.Fatalf("%d hashes, step %d: find(%q) does not reach its slot", hashes, step, c)
					}
					seen++
				}
				if seen != len(want) {
					t.Fatalf("%d hashes, step %d: %d slots in use, want %d", hashes, step, seen, len(want))
				}
				if c := name(); (st.find(hashOf(c), c) >= 0) != hasKey(want, c) {
					t.Fatalf("%d hashes, step %d: find(%q) disagrees with the map", hashes, step, c)
				}
			}
		}
	}
}

func hasKey(m map[string]int64, k string) bool { _, ok := m[k]; return ok }

// TestCustomerIDsOfEveryLength runs ids on both sides of inlineKey through the table:
// set, lookup (with near misses), views, filter rebuild, delete and expiry.
func TestCustomerIDsOfEveryLength(t *testing.T) {
	tb, err := NewTable(cluster.Config{Brokers: []string{"127.0.0.1:1"}}, "lengths", &Codec{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var names []string
	for n := 1; n <= 64; n++ {
		names = append(names, strings.Repeat("c", n))
	}
	for i, c := range names {
		tb.set(c, Record{ID: "id-" + c, Customer: c, Limit: int64(i + 1), Window: time.Minute, ExpiresAt: now.Add(time.Hour)})
	}
	tb.set("short-expiring", Record{ID: "e1", Customer: "short-expiring", ExpiresAt: now.Add(-time.Second)})
	long := strings.Repeat("e", 2*inlineKey)
	tb.set(long, Record{ID: "e2", Customer: long, ExpiresAt: now.Add(-time.Second)})
	tb.makeVisible()

	check := func(stage string, gone map[string]bool) {
		t.Helper()
		for i, c := range names {
			r, ok := tb.Lookup(strings.Clone(c))
			if ok == gone[c] || (ok && (r.Limit != int64(i+1) || r.ID() != "id-"+c)) {
				t.Fatalf("%s: Lookup(%d bytes) = %+v, %v", stage, len(c), r, ok)
			}
			if rec, ok := tb.Get(c); ok && rec.Customer != c {
				t.Fatalf("%s: Get(%d bytes) returned customer of %d bytes", stage, len(c), len(rec.Customer))
			}
			if _, ok := tb.Lookup(c[:len(c)-1] + "d"); ok {
				t.Fatalf("%s: Lookup of a near miss of %d bytes found a throttle", stage, len(c))
			}
		}
		want := len(names) - len(gone)
		if active := tb.Active(); len(active) != want {
			t.Fatalf("%s: %d active throttles, want %d", stage, len(active), want)
		}
	}
	check("after publish", nil)

	tb.forgetExpired()
	if got := tb.Stats().Active; got != len(names) {
		t.Fatalf("after forgetExpired: %d active, want %d", got, len(names))
	}
	if _, kept := tb.held(long); kept {
		t.Fatal("expired throttle under a long id still held after forgetExpired")
	}

	gone := map[string]bool{}
	for _, c := range names[inlineKey-2 : inlineKey+2] {
		if removed, _ := tb.del(c, "", 0); removed == nil || removed.Customer != c {
			t.Fatalf("del(%d bytes) = %v", len(c), removed)
		}
		gone[c] = true
	}
	tb.filterAdd.Store(1 << 20) // force a rebuild: it hashes the stored ids again
	tb.rebuildFilter()
	check("after deletes and a filter rebuild", gone)
}
