package throttle_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/follow"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
)

// home is the partition the Publisher (Murmur2, as every Java client) gives key among n.
func home(key string, n int) int {
	parts := make([]int, n)
	for i := range parts {
		parts[i] = i
	}
	return (&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: []byte(key)}, parts...)
}

// customerWhere returns a customer id whose home partition among from and among to
// partitions satisfy ok.
func customerWhere(t *testing.T, from, to int, ok func(a, b int) bool) string {
	for i := range 10000 {
		c := fmt.Sprintf("cust-%d", i)
		if ok(home(c, from), home(c, to)) {
			return c
		}
	}
	t.Fatal("no such customer id")
	return ""
}

// TestKeyOnTwoPartitions: a key counts only on its Murmur2 partition under the topic's
// current partition count. A record on another partition (a producer with another
// partitioner) is counted and skipped; when partitions are added, throttles whose key
// moved no longer count until the sweeper writes them again. A table that followed live
// and one rebuilt from zero give the same answer at every step.
func TestKeyOnTwoPartitions(t *testing.T) {
	throttletest.RequireKfake(t, "adds partitions to a topic in place; real Kafka can too, but the test also reads kfake-only timing")
	f := newFixture(t, 2, throttletest.Options{})
	stays := customerWhere(t, 2, 3, func(a, b int) bool { return a == b })
	moves := customerWhere(t, 2, 3, func(a, b int) bool { return a != b })
	f.put(
		f.msg(home(stays, 2), rec(stays, 1, time.Hour)),
		f.msg(home(moves, 2), rec(moves, 2, time.Hour)),
		f.msg(1-home(stays, 2), rec(stays, 99, time.Hour)), // another partitioner's record
	)
	var mu sync.Mutex
	moved := map[string]bool{}
	live, _ := f.sweepingWith(func(c throttle.Change) {
		if c.Kind == throttle.ChangeMoved {
			mu.Lock()
			moved[c.Customer] = true
			mu.Unlock()
		}
	}, []throttle.Option{throttle.WithRead(follow.WithPartitionDiscovery(50 * time.Millisecond))})
	// wrong is each table's count of wrong_partition records: live, then rebuilt.
	both := func(what string, want map[string]int64, wrong [2]int64) {
		t.Helper()
		rebuilt := f.run()
		for i, tb := range []*throttle.Table{live, rebuilt} {
			eventually(t, what, func() bool {
				for c, lim := range want {
					r, ok := tb.Lookup(c)
					if ok != (lim >= 0) || (ok && r.Limit != lim) {
						return false
					}
				}
				return true
			})
			if n := tb.Stats().Poison["wrong_partition"]; n != wrong[i] {
				t.Errorf("%s: table %d: wrong_partition: got %d, want %d", what, i, n, wrong[i])
			}
		}
	}
	both("the home partition's record wins", map[string]int64{stays: 1, moves: 2}, [2]int64{1, 1})

	cl := &kafka.Client{Addr: kafka.TCP(f.s.Brokers()...)}
	resp, err := cl.CreatePartitions(t.Context(), &kafka.CreatePartitionsRequest{Topics: []kafka.TopicPartitionsConfig{{Name: f.topic, Count: 3}}})
	if err != nil || resp.Errors[f.topic] != nil {
		t.Fatalf("create partitions: %v %v", err, resp.Errors)
	}
	eventually(t, "the moved throttle reported", func() bool { mu.Lock(); defer mu.Unlock(); return moved[moves] })
	mu.Lock()
	if moved[stays] {
		t.Errorf("got %s reported moved, want only %s", stays, moves)
	}
	mu.Unlock()
	// The sweeper writes the moved throttle again, on its key's new partition.
	// A table rebuilt now counts the moved key's old record as on the wrong partition.
	both("the moved throttle back on its new partition", map[string]int64{stays: 1, moves: 2}, [2]int64{1, 2})
	onHome := false
	for _, m := range logOf(t, f, moves) {
		onHome = onHome || m.Partition == home(moves, 3)
	}
	if !onHome {
		t.Errorf("no record of %s on its new partition %d", moves, home(moves, 3))
	}
}
