package consume_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/services/processing/internal/autothrottle"
	"github.com/sluice-dev/sluice/services/processing/internal/consume"
	"github.com/sluice-dev/sluice/services/processing/internal/detect"
	"github.com/sluice-dev/sluice/services/processing/internal/throttlefake"
)

const burstPartitions = 6

// burst writes a minute of traffic that ended lag ago, as ingestion writes it: each
// customer sends a request every 5s of 5*rate events, stamped alike, so the log holds
// runs of one customer's events (read in log order, the first hundred events processed
// can all be one customer's).
func burst(t *testing.T, c *testCluster, lag time.Duration, rates map[string]int) int {
	t.Helper()
	end := time.Now().Add(-lag)
	var msgs []kafka.Message
	for s := end.Add(-time.Minute); s.Before(end); s = s.Add(5 * time.Second) {
		for name, rate := range rates {
			for range 5 * rate {
				msgs = append(msgs, eventMsg(t, name, s))
			}
		}
	}
	for i := 0; i < len(msgs); i += 5000 {
		c.produce(t, msgs[i:min(i+5000, len(msgs))]...)
	}
	return len(msgs)
}

// replica is one processing replica: a consumer and its own detector and controller, as
// the service runs them, publishing to the shared store (the throttle topic).
func startReplica(t *testing.T, c *testCluster, store *throttlefake.Topic, id string) *running {
	t.Helper()
	ctrl, err := autothrottle.New(autothrottle.Config{
		Detect: detect.Config{
			Window: time.Minute, AgeThreshold: 30 * time.Second, AgeMinEvents: 20, AgeMinShare: 0.25,
			ShareThreshold: 0.5, MinEvents: 100,
		},
		Limit: 20, Window: time.Minute, Duration: 10 * time.Minute, RenewMargin: 2 * time.Minute,
		Mode: throttle.ModeEnforce, InstanceID: id,
	}, store, store)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = ctrl.Run(ctx, 100*time.Millisecond) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	processed, err := cluster.NewWriter(c.kc, processedTopic)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.CloseWriter(processed) })
	return c.start(t, consume.NewForwarder(processed), consume.Config{CommitInterval: 50 * time.Millisecond, BatchSize: 200},
		consume.WithObserver(ctrl))
}

func equalRates(n, rate int) map[string]int {
	m := map[string]int{}
	for _, name := range customers("equal", n) {
		m[name] = rate
	}
	return m
}

// runBurst processes a burst with one replica, or with a second that joins when a third
// of the events are committed (a rebalance mid-burst), and returns the throttles set and
// when all events were committed.
func runBurst(t *testing.T, rates map[string]int, rebalance bool) ([]throttle.Record, time.Time) {
	c := newCluster(t, burstPartitions)
	n := burst(t, c, 40*time.Second, rates)
	store := throttlefake.New(time.Now)
	startReplica(t, c, store, "processing-0")
	if rebalance {
		deadline := time.Now().Add(60 * time.Second)
		for sum(c.committed(t, burstPartitions)) < int64(n/3) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if got := sum(c.committed(t, burstPartitions)); got >= int64(n) {
			t.Fatalf("all %d events committed before the second replica joined: no rebalance mid-burst", got)
		}
		startReplica(t, c, store, "processing-1")
	}
	c.waitCommitted(t, burstPartitions, int64(n))
	done := time.Now()
	// Every window of the burst is judged by now: the partitions are caught up, so the
	// watermark is the clock less the lateness; give the tickers a few rounds.
	time.Sleep(detect.DefaultLateness + time.Second)
	return store.Sets(), done
}

// Issue 18: a burst from 24 equal customers reaches processing 40s behind: no one is
// throttled, with one replica or with a rebalance in the middle of the burst.
func TestBurstOfEqualCustomersThrottlesNoOne(t *testing.T) {
	for _, rebalance := range []bool{false, true} {
		t.Run(fmt.Sprintf("rebalance=%v", rebalance), func(t *testing.T) {
			sets, _ := runBurst(t, equalRates(24, 20), rebalance)
			if len(sets) != 0 {
				t.Fatalf("got %d throttles, first %+v; want none for equal customers", len(sets), sets[0])
			}
		})
	}
}

// Issue 18: one customer sends 60% of the traffic among 20 equal ones: it, and only it,
// is throttled, with or without a rebalance mid-burst. The bound: its throttle is
// published by the time the burst is processed plus the detector's lateness and a tick,
// since every window of the burst closes once the partitions are read to their end.
func TestBurstThrottlesOnlyTheCustomerAtFault(t *testing.T) {
	for _, rebalance := range []bool{false, true} {
		t.Run(fmt.Sprintf("rebalance=%v", rebalance), func(t *testing.T) {
			rates := equalRates(20, 10)
			rates["acme"] = 300 // 300 of 500 events a second
			sets, done := runBurst(t, rates, rebalance)
			if len(sets) == 0 {
				t.Fatal("got no throttle, want acme")
			}
			for _, r := range sets {
				if r.Customer != "acme" {
					t.Fatalf("got a throttle on %s (%s), want acme only", r.Customer, r.Reason.Note)
				}
			}
			if at := sets[0].CreatedAt; at.After(done.Add(detect.DefaultLateness + time.Second)) {
				t.Errorf("acme throttled %v after the burst was processed, want within %v", at.Sub(done), detect.DefaultLateness+time.Second)
			}
			t.Logf("acme throttled (%s); %d records set in all", sets[0].Reason.Note, len(sets))
		})
	}
}
