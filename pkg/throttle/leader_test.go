package throttle_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/pkg/throttle/follow"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
)

// TestLeaderMoves: when a partition's leader moves to another broker, the table looks the
// leader up again at once rather than when its cached metadata expires, and reads on
// from the same offset.
func TestLeaderMoves(t *testing.T) {
	throttletest.RequireKfake(t, "moves a partition's leader in place (kfake's MoveTopicPartition); the real cluster's failover scenarios are in the real-Kafka suite")
	s := throttletest.Start(t, throttletest.Options{}) // for its registry
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(1, "moving"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	kc := cluster.Config{Brokers: c.ListenAddrs()}
	f := &fixture{t: t, s: s, topic: "moving", codec: s.Codec(t, "moving"), parts: 1}
	write := func(customer string, limit int64) {
		t.Helper()
		w := &kafka.Writer{Addr: kafka.TCP(kc.Brokers...), Topic: "moving", RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond,
			Transport: &kafka.Transport{Dial: (&net.Dialer{}).DialContext}}
		defer w.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if err := w.WriteMessages(ctx, f.msg(0, rec(customer, limit, time.Hour))); err != nil {
			t.Fatal(err)
		}
	}
	write("acme", 1)
	tb, err := throttle.NewTable(kc, "moving", s.Codec(t, "moving"), throttle.WithRead(follow.WithBackoff(10*time.Millisecond, 100*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = tb.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := tb.WaitReady(t.Context()); err != nil {
		t.Fatal(err)
	}
	for i, customer := range []string{"globex", "initech", "umbrella"} {
		leader := c.LeaderFor("moving", 0)
		if err := c.MoveTopicPartition("moving", 0, (leader+1)%3); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		write(customer, int64(i+2))
		// Well inside the table's metadata cache lifetime (10s): only a lookup of the
		// leader on the error reaches the new one this soon.
		for {
			if r, ok := tb.Lookup(customer); ok && r.Limit == int64(i+2) {
				break
			}
			if time.Since(start) > 4*time.Second {
				t.Fatalf("move %d: %s not read from the new leader within 4s (stats %+v)", i, customer, tb.Stats().Partitions)
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Logf("move %d: read from the new leader %v after the write", i, time.Since(start).Round(time.Millisecond))
	}
	wantLimit(t, tb, "acme", 1)
}
