package throttle

import (
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
)

// TestCustomerIDsOfEveryLength runs ids of 1 to 64 bytes through the table: set, lookup
// (with near misses), views, filter rebuild, delete and expiry.
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
	long := strings.Repeat("e", 50)
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
	for _, c := range names[23:27] {
		if removed, _ := tb.del(c, "", 0); removed == nil || removed.Customer != c {
			t.Fatalf("del(%d bytes) = %v", len(c), removed)
		}
		gone[c] = true
	}
	tb.filterAdd.Store(1 << 20) // force a rebuild: it hashes the stored ids again
	tb.rebuildFilter()
	check("after deletes and a filter rebuild", gone)
}
