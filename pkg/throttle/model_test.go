package throttle_test

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/follow"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
)

var (
	modelCases = flag.Int("model.cases", 200, "cases TestModelRandomLogs runs (make test runs 2000 more without the race detector)")
	modelSeed  = flag.Uint64("model.seed", 0, "run only the case of this seed")
)

// TestModelRandomLogs writes random logs over several partitions (sets, lifts, expiry
// tombstones, already expired records, poison, empty batches, committed and aborted
// transactions, compaction at random points) while injecting faults (dropped
// connections, the broker away, registry outages of random length). After each case, a
// table that followed the log live and one rebuilt from zero must both hold exactly the
// model's latest value per key, and no position may ever move backwards.
func TestModelRandomLogs(t *testing.T) {
	throttletest.RequireKfake(t, "serves random hand-built logs through kfake's request hooks")
	s := throttletest.Start(t, throttletest.Options{})
	seeds := make([]uint64, 0, *modelCases)
	if *modelSeed != 0 {
		seeds = append(seeds, *modelSeed)
	} else {
		base := uint64(time.Now().UnixNano())
		for i := range *modelCases {
			seeds = append(seeds, base+uint64(i))
		}
	}

	// Registry outages of random length for the whole run, across all cases.
	var outages atomic.Int64
	stop := make(chan struct{})
	var fwg sync.WaitGroup
	fwg.Add(1)
	go func() {
		defer fwg.Done()
		rng := rand.New(rand.NewPCG(seeds[0], 1))
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(50+rng.IntN(300)) * time.Millisecond):
			}
			s.StopRegistry()
			outages.Add(1)
			time.Sleep(time.Duration(10+rng.IntN(400)) * time.Millisecond)
			if err := s.StartRegistry(); err != nil {
				t.Error(err)
				return
			}
		}
	}()

	var mu sync.Mutex
	stats := map[string]int{}
	sem := make(chan struct{}, 6)
	var wg sync.WaitGroup
	for _, seed := range seeds {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			got := runModelCase(t, s, seed)
			mu.Lock()
			for k, v := range got {
				stats[k] += v
			}
			mu.Unlock()
		}()
		if t.Failed() {
			break
		}
	}
	wg.Wait()
	close(stop)
	fwg.Wait()
	if err := s.StartRegistry(); err != nil {
		t.Fatal(err)
	}
	t.Logf("model: %d cases, %d registry outages; %v", len(seeds), outages.Load(), stats)
}

// past reports whether tb's position on partition p has reached off.
func past(tb *throttle.Table, p int, off int64) bool {
	for _, pp := range tb.Stats().Partitions {
		if pp.Partition == p {
			return pp.Position >= off
		}
	}
	return off == 0
}

// modelKey is the model's view of one customer: its current throttle, if any.
type modelKey struct {
	id      string
	limit   int64
	created int64 // unix ms
}

func runModelCase(t *testing.T, s *throttletest.Stack, seed uint64) map[string]int {
	rng := rand.New(rand.NewPCG(seed, 2))
	parts := 1 + rng.IntN(3)
	topic := fmt.Sprintf("model-%d", seed)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := throttle.EnsureTopic(ctx, s.Kafka(), throttle.TopicSpec{Name: topic, Partitions: parts}); err != nil {
		t.Errorf("seed %d: %v", seed, err)
		return nil
	}
	log := newFakeLog(s.Cluster(), topic, parts, seed)
	defer func() { cancel(); log.close(s.Cluster(), s.Brokers()) }() // tables stop first
	log.failPermille.Store(int32(rng.IntN(40)))
	codec := s.Codec(t, topic)
	fail := func(format string, args ...any) {
		t.Errorf("seed %d (rerun with -run TestModelRandomLogs -model.seed %d): %s", seed, seed, fmt.Sprintf(format, args...))
	}

	startTable := func() (*throttle.Table, func() int64) {
		tb, err := throttle.NewTable(s.Kafka(), topic, s.Codec(t, topic),
			throttle.WithRead(follow.WithPollInterval(20*time.Millisecond)), throttle.WithRead(follow.WithBackoff(5*time.Millisecond, 50*time.Millisecond)))
		if err != nil {
			panic(err) // options are constant: cannot fail
		}
		var backwards atomic.Int64
		go func() { _ = tb.Run(ctx) }()
		go func() { // the position never moves backwards
			last := map[int]int64{}
			for ctx.Err() == nil {
				for _, p := range tb.Stats().Partitions {
					if p.Position < last[p.Partition] {
						backwards.Add(1)
					}
					last[p.Partition] = p.Position
				}
				time.Sleep(time.Millisecond)
			}
		}()
		return tb, backwards.Load
	}
	live, liveBack := startTable()

	model := map[string]*modelKey{}
	customers := []string{"acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell"}
	partOf := func(c string) int { return home(c, parts) }
	limit := int64(0)
	counts := map[string]int{"cases": 1}
	newRec := func(c string, expired bool) (fakeRec, *modelKey) {
		limit++
		r := rec(c, limit, time.Hour)
		r.ID = fmt.Sprintf("%s-%d-%d", c, limit, seed)
		r.CreatedAt = r.CreatedAt.Add(time.Duration(limit) * time.Millisecond) // later records, later times
		if expired {
			r.CreatedAt = r.CreatedAt.Add(-2 * time.Hour)
			r.ExpiresAt = r.CreatedAt.Add(time.Minute)
		}
		b, err := codec.Encode(&r)
		for err != nil && ctx.Err() == nil { // the writer registers the schema: not under test
			time.Sleep(10 * time.Millisecond)
			b, err = codec.Encode(&r)
		}
		return fakeRec{key: []byte(c), value: b}, &modelKey{id: r.ID, limit: limit, created: r.CreatedAt.UnixMilli()}
	}
	// record returns one random record of partition p and what it does to the model.
	record := func(p int) (fakeRec, func()) {
		var mine []string
		for _, c := range customers {
			if partOf(c) == p {
				mine = append(mine, c)
			}
		}
		if len(mine) == 0 || rng.IntN(10) == 0 {
			counts["poison"]++
			poison := fmt.Sprintf("poison-%d", rng.IntN(3))
			if rng.IntN(2) == 0 {
				return fakeRec{key: []byte(poison), value: []byte{}}, func() {}
			}
			return fakeRec{key: []byte(poison), value: []byte{9, 9, 9}}, func() {}
		}
		if parts > 1 && rng.IntN(12) == 0 { // another partitioner's record: counts nowhere
			counts["wrong_partition"]++
			for _, c := range customers {
				if partOf(c) != p {
					r, _ := newRec(c, false)
					return r, func() {}
				}
			}
		}
		c := mine[rng.IntN(len(mine))]
		switch k := rng.IntN(10); {
		case k < 5:
			counts["sets"]++
			r, m := newRec(c, false)
			return r, func() { model[c] = m }
		case k < 6:
			counts["expired"]++
			r, _ := newRec(c, true)
			return r, func() { delete(model, c) }
		case k < 8:
			counts["lifts"]++
			return fakeRec{key: []byte(c)}, func() { delete(model, c) }
		default:
			cur := model[c]
			if cur == nil {
				return fakeRec{key: []byte(c)}, func() { delete(model, c) }
			}
			counts["expiry_tombstones"]++
			return fakeRec{key: []byte(c), headers: []kmsg.Header{
					{Key: throttle.HeaderExpires, Value: []byte(cur.id)},
					{Key: throttle.HeaderExpiresCreated, Value: strconv.AppendInt(nil, cur.created, 10)},
				}},
				func() { delete(model, c) }
		}
	}

	for range 10 + rng.IntN(60) {
		p := rng.IntN(parts)
		switch op := rng.IntN(20); {
		case op < 10:
			var recs []fakeRec
			for range 1 + rng.IntN(4) {
				r, apply := record(p)
				recs = append(recs, r)
				apply()
			}
			log.appendBatch(p, recs, int64(rng.IntN(2)*rng.IntN(5)))
		case op < 12:
			counts["empty_batches"]++
			log.appendBatch(p, nil, int64(1+rng.IntN(5)))
		case op < 14:
			commit := rng.IntN(2) == 0
			before := maps.Clone(model)
			var recs []fakeRec
			for range 1 + rng.IntN(3) {
				r, apply := record(p)
				recs = append(recs, r)
				apply()
			}
			if commit {
				counts["committed_txns"]++
			} else {
				counts["aborted_txns"]++
				model = before
			}
			log.appendTxn(p, int64(100+rng.IntN(3)), recs, commit)
		case op < 16:
			log.roll(p)
		case op < 18:
			counts["compactions"]++
			drop := rng.IntN(2) == 0
			if drop {
				// delete.retention.ms: tombstones go only once every reader has passed
				// them, or a reader would keep a deleted key for ever (KAFKA-NOTES).
				end := log.end(p)
				for ctx.Err() == nil && !past(live, p, end) {
					time.Sleep(2 * time.Millisecond)
				}
			}
			log.compact(p, func() bool { return rng.IntN(3) == 0 }, drop, rng.IntN(2) == 0)
		case op < 19:
			counts["broker_outages"]++
			old := log.failPermille.Swap(1000)
			time.Sleep(time.Duration(rng.IntN(100)) * time.Millisecond)
			log.failPermille.Store(old)
		default:
			time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
		}
	}

	want := map[string]int64{}
	for c, m := range model {
		want[c] = m.limit
	}
	check := func(tb *throttle.Table, how string) {
		ends := make([]int64, parts)
		for p := range parts {
			ends[p] = log.end(p)
		}
		for ctx.Err() == nil {
			ps := tb.Stats().Partitions
			done := len(ps) == parts && tb.Ready()
			for _, pp := range ps {
				done = done && pp.Position >= ends[pp.Partition]
			}
			if done {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if ctx.Err() != nil {
			fail("%s: never reached the log end %v: %+v", how, ends, tb.Stats().Partitions)
			return
		}
		for _, c := range customers {
			r, ok := tb.Lookup(c)
			w, has := want[c]
			if ok != has || (ok && r.Limit != w) {
				fail("%s: %s: got limit %d (found %v), want %d (found %v)", how, c, r.Limit, ok, w, has)
			}
		}
	}
	check(live, "live")
	rebuilt, rebuiltBack := startTable()
	check(rebuilt, "rebuilt")
	if n := liveBack() + rebuiltBack(); n != 0 {
		fail("a position moved backwards %d times", n)
	}
	return counts
}
