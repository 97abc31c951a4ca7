package throttle

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
)

// The hot path of every event. The baseline is what a service would write without this
// package: a rate.Limiter per customer in a sync.Map.

const benchCustomers = 100_000

func benchTable(b *testing.B) (*Table, []string) {
	b.Helper()
	tb, err := NewTable(cluster.Config{Brokers: []string{"127.0.0.1:1"}}, "bench", &Codec{})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	names := make([]string, benchCustomers)
	for i := range names {
		names[i] = "customer-" + strconv.Itoa(i)
		tb.set(names[i], Record{ID: names[i], Customer: names[i], Limit: 20, Window: time.Minute, CreatedAt: now, ExpiresAt: now.Add(time.Hour), SetBy: "bench"})
	}
	tb.makeVisible()
	return tb, names
}

func benchBaseline(names []string) *sync.Map {
	var m sync.Map
	for _, n := range names {
		m.Store(n, rate.NewLimiter(rate.Limit(20.0/60), 20))
	}
	return &m
}

func missNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "stranger-" + strconv.Itoa(i)
	}
	return out
}

func BenchmarkLookup(b *testing.B) {
	tb, hits := benchTable(b)
	base := benchBaseline(hits)
	misses := missNames(len(hits))
	// "all" cycles through every key (each lookup is a cache miss: the worst case), in a
	// shuffled order: in the order they were stored, a structure with one allocation per
	// entry (as sync.Map's trie) would walk its entries in address order and be helped by
	// the prefetcher as no service's traffic would help it. "hot1k" cycles through 1,000
	// keys spread over the table, as a service sees its active customers again and again.
	//
	// Either way each key looked up is a copy, made in the order it is looked up: as in a
	// service, where the customer was just parsed from a request (its bytes are in cache)
	// and is never the very string the table stores (so comparing reads the stored one).
	shuffle := func(names []string) []string {
		out := slices.Clone(names)
		rand.New(rand.NewPCG(1, 2)).Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
		return out
	}
	copies := func(names []string) []string {
		out := make([]string, len(names))
		for i, n := range names {
			out[i] = strings.Clone(n)
		}
		return out
	}
	hot := func(names []string) []string {
		out := make([]string, 0, 1000)
		for i := 0; i < len(names); i += len(names) / 1000 {
			out = append(out, names[i])
		}
		return out
	}
	for _, c := range []struct {
		name  string
		names []string
		want  bool
	}{
		{"hit/all", copies(shuffle(hits)), true}, {"miss/all", copies(shuffle(misses)), false},
		{"hit/hot1k", copies(hot(hits)), true}, {"miss/hot1k", copies(hot(misses)), false},
	} {
		b.Run("table/"+c.name+"/serial", func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, ok := tb.Lookup(c.names[i%len(c.names)]); ok != c.want {
					b.Fatal("wrong answer")
				}
				i++
			}
		})
		b.Run("table/"+c.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					if _, ok := tb.Lookup(c.names[i%len(c.names)]); ok != c.want {
						b.Fatal("wrong answer")
					}
					i += 7
				}
			})
		})
		b.Run("baseline-syncmap-rate/"+c.name+"/serial", func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, ok := base.Load(c.names[i%len(c.names)]); ok != c.want {
					b.Fatal("wrong answer")
				}
				i++
			}
		})
		b.Run("baseline-syncmap-rate/"+c.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					if _, ok := base.Load(c.names[i%len(c.names)]); ok != c.want {
						b.Fatal("wrong answer")
					}
					i += 7
				}
			})
		})
	}
}

// TestLookupDoesNotAllocate pins the 0-allocation property outside the benchmarks.
func TestLookupDoesNotAllocate(t *testing.T) {
	tb, names := benchTable(&testing.B{})
	if n := testing.AllocsPerRun(1000, func() { tb.Lookup(names[42]); tb.Lookup("nobody") }); n != 0 {
		t.Fatalf("got %.1f allocs per lookup, want 0", n)
	}
}

// The membership filter must never hide a throttle: across adds, removals and rebuilds,
// every throttle in the maps is found.
func TestFilterNeverHidesAThrottle(t *testing.T) {
	tb, names := benchTable(&testing.B{})
	tb.filterAdd.Store(1 << 20) // force the next rebuild
	for i, n := range names {
		if i%2 == 0 {
			tb.del(n, "", 0)
		}
	}
	tb.rebuildFilter()
	now := time.Now()
	for i, n := range names {
		_, ok := tb.Lookup(n)
		if want := i%2 == 1; ok != want {
			t.Fatalf("Lookup(%s) after rebuild: got %v, want %v", n, ok, want)
		}
	}
	tb.set("late", Record{ID: "l", Customer: "late", ExpiresAt: now.Add(time.Hour)})
	if _, ok := tb.Lookup("late"); !ok {
		t.Fatal("Lookup(late) after an add: got absent, want found")
	}
}

// BenchmarkMemoryLatency is the machine's side of BenchmarkLookup's hit/all figures: a
// chain of dependent loads, one 64-byte line each, over arrays about as large as the
// maps of 100,000 throttles and smaller. Where the array no longer fits the
// cache the VM leaves this process, each load waits for memory, and a Lookup of a key
// not looked up lately cannot take less (consecutive lookups only overlap in the CPU).
func BenchmarkMemoryLatency(b *testing.B) {
	for _, mb := range []int{1, 2, 4, 8, 10} {
		b.Run(strconv.Itoa(mb)+"MB", func(b *testing.B) {
			lines := make([][8]int64, mb<<20/64)
			order := rand.New(rand.NewPCG(1, 2)).Perm(len(lines))
			for i, at := range order { // one cycle through every line, in random order
				lines[at][0] = int64(order[(i+1)%len(order)])
			}
			next := int64(0)
			for b.Loop() {
				next = lines[next][0]
			}
			if next < 0 {
				b.Fatal("unreachable: keeps the chain from being optimised away")
			}
		})
	}
}
