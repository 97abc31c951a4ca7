package audit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// memTopic is an audit topic in memory: every record written, in order.
type memTopic struct {
	mu   sync.Mutex
	msgs []kafka.Message
	fail bool
}

func (w *memTopic) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fail {
		return errors.New("broker away")
	}
	for _, m := range msgs {
		m.Offset = int64(len(w.msgs))
		w.msgs = append(w.msgs, m)
	}
	return nil
}

func (w *memTopic) book(t *testing.T) *Book {
	t.Helper()
	b := NewBook(nil, 0)
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, m := range w.msgs {
		if err := b.Apply(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// TestRangesMatchASet: Add, Union, Minus and Len agree with a set of offsets, for random
// offsets mostly in order (as a consumer adds them) and some not.
func TestRangesMatchASet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 500 {
		var a, b Ranges
		sa, sb := map[int64]bool{}, map[int64]bool{}
		next := int64(rng.IntN(10))
		for range rng.IntN(60) {
			off := next
			if rng.IntN(4) == 0 {
				off = int64(rng.IntN(80))
			} else {
				next += int64(1 + rng.IntN(2))
			}
			if rng.IntN(2) == 0 {
				a, sa[off] = a.Add(off), true
			} else {
				b, sb[off] = b.Add(off), true
			}
		}
		for _, r := range []Ranges{a, b} {
			if !r.valid() {
				t.Fatalf("round %d: %v is not sorted, disjoint and non-adjacent", round, r)
			}
		}
		u, m := a.Union(b), a.Minus(b)
		wantU, wantM := int64(0), int64(0)
		for off := range int64(200) {
			inU, inM := sa[off] || sb[off], sa[off] && !sb[off]
			if inU {
				wantU++
			}
			if inM {
				wantM++
			}
			if u.Has(off) != inU || m.Has(off) != inM || a.Has(off) != sa[off] {
				t.Fatalf("round %d offset %d: union %v has it %v (want %v), minus %v has it %v (want %v), a %v has it %v (want %v); b %v",
					round, off, u, u.Has(off), inU, m, m.Has(off), inM, a, a.Has(off), sa[off], b)
			}
		}
		if a.Len() != int64(len(sa)) || u.Len() != wantU || m.Len() != wantM || !u.valid() {
			t.Fatalf("round %d: lengths a %d/%d union %d/%d minus %d/%d", round, a.Len(), len(sa), u.Len(), wantU, m.Len(), wantM)
		}
	}
}

// TestReconcileMatchesAModel runs a random pipeline: ingestion replicas (which restart
// cleanly, as new incarnations) accept events, some of which are written twice (a
// retried produce); some events are removed from the topic before processing reads them.
// Processing readers handle each partition in order and dead-letter some. Now and then a
// reader crashes, so that the next reader handles again what was not committed, or a
// rebalance gives it back its partition, which it reads again from the commit. Every tally publishes at random times and at the end. The
// reconciliation of what the topic holds must equal the model's truth in every cell.
func TestReconcileMatchesAModel(t *testing.T) {
	const width = 1000
	var copies, known, short, over int
	defer func() {
		t.Logf("over 40 runs: %d copies, %d known for copies; %d short cells, %d over", copies, known, short, over)
	}()
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 7))
		topic := &memTopic{}
		start := time.UnixMilli(1_800_000_000_000)
		type truth struct{ accepted, handled, dead, dups, lost, copies, detected int64 }
		detected := map[[2]int64]bool{} // partition, offset of a copy some reader knew for one
		want := map[cell]*truth{}
		get := func(p int, at time.Time) *truth {
			c := cell{p, bucketOf(at, width)}
			if want[c] == nil {
				want[c] = &truth{}
			}
			return want[c]
		}
		newTally := func(tier, name string) *Tally {
			tl, err := New(tier, Incarnation(name), topic, WithWidth(width*time.Millisecond), WithClock(func() time.Time { return start }))
			if err != nil {
				t.Fatal(err)
			}
			return tl
		}
		const parts = 3
		type rec struct {
			at   time.Time
			lost bool
			id   string
			copy bool
		}
		log := make([][]rec, parts)
		ing := newTally(Ingestion, "in-0")
		for i := range 400 + rng.IntN(400) {
			if rng.IntN(150) == 0 {
				_ = ing.Flush(context.Background(), true)
				ing = newTally(Ingestion, "in-0")
			}
			p := rng.IntN(parts)
			at := start.Add(time.Duration(i*10+rng.IntN(30)) * time.Millisecond) // out of order at bucket edges
			n := 1 + rng.IntN(3)
			msgs := make([]kafka.Message, n)
			for j := range msgs {
				msgs[j] = kafka.Message{Partition: p, Time: at}
				id := fmt.Sprintf("ev-%d-%d", i, j)
				get(p, at).accepted++
				if rng.IntN(25) == 0 { // written twice, neither copy lost
					log[p] = append(log[p], rec{at, false, id, false}, rec{at, false, id, true})
					get(p, at).copies++
					continue
				}
				lost := rng.IntN(40) == 0 // removed by DeleteRecords before processing read it
				log[p] = append(log[p], rec{at, lost, id, false})
				if lost {
					get(p, at).lost++
				}
			}
			ing.Accepted(msgs)
			if rng.IntN(20) == 0 {
				_ = ing.Flush(context.Background(), false)
			}
		}
		_ = ing.Flush(context.Background(), true)

		for p := range parts {
			committed := 0
			for pos := 0; pos < len(log[p]); {
				proc := newTally(Processing, "proc")
				handled := map[string]bool{} // ids this reader handled
				for pos < len(log[p]) {
					r := log[p][pos]
					if !r.lost {
						deadLettered := rng.IntN(30) == 0
						if r.copy && handled[r.id] {
							detected[[2]int64{int64(p), int64(pos)}] = true
						}
						handled[r.id] = true
						proc.Handled(p, int64(pos), r.at, r.id, deadLettered)
						tr := get(p, r.at)
						if deadLettered {
							tr.dead++
						}
						tr.handled++
					}
					pos++
					if rng.IntN(10) == 0 {
						// publish, then commit: the consumer's order
						if err := proc.Flush(context.Background(), false); err != nil {
							t.Fatal(err)
						}
						if rng.IntN(2) == 0 {
							committed = pos
						}
					}
					if rng.IntN(80) == 0 {
						break // a crash: what was handled since the commit is handled again
					}
					if rng.IntN(80) == 0 { // a rebalance: this reader reads again from the commit
						for q := committed; q < pos; q++ {
							if !log[p][q].lost {
								get(p, log[p][q].at).dups++
							}
						}
						pos = committed
					}
				}
				if pos < len(log[p]) || rng.IntN(2) == 0 {
					_ = proc.Flush(context.Background(), false) // published, then died before the commit
					for q := committed; q < pos; q++ {
						if !log[p][q].lost {
							tr := get(p, log[p][q].at)
							tr.dups++
						}
					}
					pos = committed
				} else {
					_ = proc.Flush(context.Background(), true)
				}
			}
		}

		rows := topic.book(t).Reconcile(start.Add(time.Hour), 0)
		got := map[cell]Row{}
		for _, r := range rows {
			got[cell{r.Partition, r.Bucket.UnixMilli()}] = r
		}
		if len(got) != len(want) {
			t.Fatalf("seed %d: %d cells reconciled, want %d", seed, len(got), len(want))
		}
		for pc := range detected {
			c := cell{int(pc[0]), bucketOf(log[pc[0]][pc[1]].at, width)}
			want[c].dups++
			want[c].detected++
		}
		for c, tr := range want {
			r := got[c]
			// Copies are handled like any record; those no reader knew for copies are over,
			// and a bucket short and over by as many is even.
			diff := tr.lost - (tr.copies - tr.detected)
			status := Complete
			switch {
			case diff > 0:
				status, short = Short, short+1
			case diff < 0:
				status, over = Over, over+1
			}
			copies, known = copies+int(tr.copies), known+int(tr.detected)
			if r.Accepted != tr.accepted || r.Forwarded+r.DeadLettered != tr.accepted-tr.lost+tr.copies || r.DeadLettered > tr.dead ||
				r.Missing != max(diff, 0) || r.Extra != max(-diff, 0) || r.Status != status || r.Duplicates != tr.dups {
				t.Fatalf("seed %d cell %+v: got %+v, want accepted %d, lost %d, copies %d (%d known), duplicates %d",
					seed, c, r, tr.accepted, tr.lost, tr.copies, tr.detected, tr.dups)
			}
		}
	}
}
