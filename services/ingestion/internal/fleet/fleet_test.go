package fleet_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/pkg/throttle/follow"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
	"github.com/sluice-dev/sluice/services/ingestion/internal/fleet"
)

const (
	topic    = "sluice.ingestion.members"
	interval = 100 * time.Millisecond
	ttl      = 500 * time.Millisecond
)

type replica struct {
	f      *fleet.Fleet
	cancel context.CancelFunc
	done   chan struct{}
}

// start runs one replica's fleet membership against the in-process broker.
func start(t *testing.T, s *throttletest.Stack, id string) *replica {
	t.Helper()
	return startServing(t, s, id, nil)
}

// startServing is start with a Serving gate.
func startServing(t *testing.T, s *throttletest.Stack, id string, serving func() bool) *replica {
	t.Helper()
	kc := s.Kafka()
	w, err := fleet.NewWriter(kc, topic)
	if err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t).Named(id)
	f, err := fleet.New(fleet.Config{Replica: id, Interval: interval, TTL: ttl, Serving: serving, Log: log}, w,
		func(apply fleet.ApplyFunc) (fleet.Source, error) {
			return follow.New(kc, topic, apply, follow.WithLogger(log),
				follow.WithPollInterval(interval), follow.WithBackoff(20*time.Millisecond, interval))
		})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{f: f, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		_ = f.Run(ctx)
		_ = cluster.CloseWriter(w)
	}()
	t.Cleanup(r.crash)
	return r
}

// stop leaves cleanly: tombstone, then stop.
func (r *replica) stop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.f.Leave(ctx); err != nil {
		t.Fatalf("leave: %v", err)
	}
	r.crash()
}

// crash stops without a tombstone.
func (r *replica) crash() {
	r.cancel()
	<-r.done
}

// waitSize waits until every replica sees want alive replicas (0: unknown).
func waitSize(t *testing.T, within time.Duration, want int, rs ...*replica) time.Duration {
	t.Helper()
	begin := time.Now()
	deadline := begin.Add(within)
	for {
		all := true
		for _, r := range rs {
			if n, _ := r.f.Size(); n != want {
				all = false
			}
		}
		if all {
			return time.Since(begin)
		}
		if time.Now().After(deadline) {
			var got []int
			for _, r := range rs {
				n, _ := r.f.Size()
				got = append(got, n)
			}
			t.Fatalf("after %s: sizes %v, want all %d", within, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFleetSizeWithRealHeartbeats(t *testing.T) {
	s := throttletest.Start(t, throttletest.Options{})
	s.CreateTopic(t, topic, 1)

	a, b := start(t, s, "a"), start(t, s, "b")
	waitSize(t, 10*time.Second, 2, a, b)

	c := start(t, s, "c")
	took := waitSize(t, 5*time.Second, 3, a, b, c)
	t.Logf("a third replica counted by all within %s", took)

	// A clean stop writes a tombstone: the others count it out at once, well within
	// the TTL.
	c.stop(t)
	took = waitSize(t, 5*time.Second, 2, a, b)
	t.Logf("a clean stop counted out within %s", took)

	// A crash leaves no tombstone: the heartbeat expires after the TTL.
	b.crash()
	took = waitSize(t, 5*time.Second, 1, a)
	if took < ttl/2 {
		t.Errorf("a crashed replica counted out after %s, before its TTL %s could pass", took, ttl)
	}
	t.Logf("a crash counted out within %s", took)

	// The broker goes away: a cannot read its own heartbeat back, so once the TTL has
	// passed its size is unknown (and the enforcer falls back to full limits).
	s.StopBroker()
	took = waitSize(t, 5*time.Second, 0, a)
	t.Logf("fleet size unknown %s after the broker stopped", took)
	if _, known := a.f.Size(); known {
		t.Fatal("broker down: size known, want unknown")
	}

	// And it recovers when the broker is back.
	if err := s.StartBroker(); err != nil {
		t.Fatal(err)
	}
	s.CreateTopic(t, topic, 1) // the in-memory broker restarts empty
	waitSize(t, 15*time.Second, 1, a)
}

// A replica that does not serve yet (its throttle table is catching up) must not count:
// the others keep the shares of the fleet that admits events, and it joins as soon as it
// serves.
func TestReplicaCountsOnlyOnceServing(t *testing.T) {
	s := throttletest.Start(t, throttletest.Options{})
	s.CreateTopic(t, topic, 1)

	a := start(t, s, "a")
	var ready atomic.Bool
	b := startServing(t, s, "b", ready.Load)
	waitSize(t, 10*time.Second, 1, a)
	time.Sleep(3 * interval) // several heartbeat intervals: b must stay out all along
	if n, _ := a.f.Size(); n != 1 {
		t.Fatalf("a not-ready replica is counted: a sees %d replicas, want 1", n)
	}

	ready.Store(true)
	took := waitSize(t, 5*time.Second, 2, a, b)
	if took > interval+ttl {
		t.Errorf("counted %s after it began serving, want within about one heartbeat", took)
	}
	t.Logf("a replica that began serving was counted by all within %s", took)
}
