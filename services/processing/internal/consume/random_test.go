package consume_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
	"github.com/sluice-dev/sluice/services/platform/event"
	"github.com/sluice-dev/sluice/services/processing/internal/consume"
)

var randomCases = flag.Int("consume.cases", 6, "cases of TestRandomFailuresAndRestarts")

// The commit invariant, tried on random cases: a handler that fails at random (retried,
// or for good), poison records, random batch sizes and commit intervals, and shutdowns
// at random moments. After every shutdown, each partition's committed offset covers only
// records that were handled or dead-lettered; in the end every record was one or the
// other. Each case logs its seed.
func TestRandomFailuresAndRestarts(t *testing.T) {
	cases := *randomCases
	if throttletest.Real() {
		cases = min(cases, 2) // each run there joins a real group: seconds, not milliseconds
	}
	for i := range cases {
		seed := uint64(time.Now().UnixNano()) + uint64(i)
		t.Run(fmt.Sprintf("seed-%d", seed), func(t *testing.T) { randomCase(t, seed) })
	}
}

func randomCase(t *testing.T, seed uint64) {
	const partitions, total = 3, 300
	rng := rand.New(rand.NewPCG(seed, 42))
	c := newCluster(t, partitions)
	var msgs []kafka.Message
	names := customers("r", 12)
	for i := range total {
		m := eventMsg(t, names[i%len(names)], time.Now())
		if rng.IntN(30) == 0 {
			m.Value = []byte("poison " + strconv.Itoa(i))
		}
		msgs = append(msgs, m)
	}
	c.produce(t, msgs...)

	var mu sync.Mutex
	handled := map[[2]int64]bool{}
	// Each (partition, offset, attempt) fails or not by a hash of the seed, so a case
	// replays the same way.
	outcome := func(p int, off int64, attempt int) int {
		r := rand.New(rand.NewPCG(seed^uint64(p)<<40^uint64(off)<<8, uint64(attempt)))
		return r.IntN(100)
	}
	attempts := map[[2]int64]int{}
	h := consume.PerEvent(func(_ context.Context, _ event.Event, msg kafka.Message) error {
		mu.Lock()
		defer mu.Unlock()
		k := [2]int64{int64(msg.Partition), msg.Offset}
		attempts[k]++
		switch o := outcome(msg.Partition, msg.Offset, attempts[k]); {
		case o < 3:
			return consume.Permanent(errors.New("refused for good"))
		case o < 23:
			return errors.New("hiccup")
		}
		handled[k] = true
		return nil
	})
	done := func() map[[2]int64]bool {
		out := map[[2]int64]bool{}
		for _, m := range c.readAllDead(t) {
			p, _ := header(m, consume.HeaderPartition)
			o, _ := header(m, consume.HeaderOffset)
			pi, _ := strconv.ParseInt(p, 10, 64)
			oi, _ := strconv.ParseInt(o, 10, 64)
			out[[2]int64{pi, oi}] = true
		}
		mu.Lock()
		defer mu.Unlock()
		for k := range handled {
			out[k] = true
		}
		return out
	}
	for round := 0; ; round++ {
		if round == 40 {
			t.Fatalf("seed %d: not all committed after 40 runs: %v", seed, c.committed(t, partitions))
		}
		cfg := consume.Config{Retries: rng.IntN(3), Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
			BatchSize: 1 + rng.IntN(32), CommitInterval: time.Duration(5+rng.IntN(45)) * time.Millisecond}
		r := c.start(t, h, cfg)
		runFor := time.Duration(5+rng.IntN(80)) * time.Millisecond
		if throttletest.Real() {
			runFor = time.Duration(400+rng.IntN(1600)) * time.Millisecond
		}
		time.Sleep(runFor)
		if err := r.stop(t); err != nil {
			t.Fatalf("seed %d round %d: run: %v", seed, round, err)
		}
		committed := c.committed(t, partitions)
		ok := done()
		for p, next := range committed {
			for off := range next {
				if !ok[[2]int64{int64(p), off}] {
					t.Fatalf("seed %d round %d: partition %d offset %d committed (next %d) but neither handled nor dead-lettered",
						seed, round, p, off, next)
				}
			}
		}
		if sum(committed) == total {
			t.Logf("seed %d: all %d records handled or dead-lettered after %d runs (%d handled)", seed, total, round+1, len(handled))
			return
		}
	}
}

// readAllDead reads the dead-letter topic from its start to its end.
func (c *testCluster) readAllDead(t *testing.T) []kafka.Message {
	t.Helper()
	conn, err := kafka.DialLeader(context.Background(), "tcp", c.kc.Brokers[0], dlqTopic, 0)
	if err != nil {
		t.Fatal(err)
	}
	first, last, err := conn.ReadOffsets()
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	if first >= last {
		return nil
	}
	return c.readAll(t, dlqTopic, int(last-first))
}
