package kafkacluster_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-dev/sluice/pkg/throttle/throttletest/kafkacluster"
)

// TestNodeLifecycle starts a cluster, kills and stops the leader of a topic's partition,
// and checks that leadership moves and the node comes back in sync. It starts JVMs, so
// it runs only where the real-Kafka suite does.
func TestNodeLifecycle(t *testing.T) {
	if os.Getenv("SLUICE_TEST_KAFKA") != "real" {
		t.Skip("SLUICE_TEST_KAFKA=real runs the real-Kafka tests (make test-kafka)")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := kafkacluster.Start(ctx, kafkacluster.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	}()
	t.Logf("Kafka %s: 3 nodes serving after %s", c.Version(), time.Since(start).Round(time.Millisecond))

	const topic = "lifecycle"
	createTopic(t, ctx, c.Brokers(), topic, 3)
	if err := c.WaitLeaders(ctx, topic, 3); err != nil {
		t.Fatal(err)
	}
	leader, err := c.Leader(ctx, topic, 0)
	if err != nil {
		t.Fatal(err)
	}

	start = time.Now()
	c.Kill(leader)
	if err := c.WaitLeaders(ctx, topic, 2); err != nil {
		t.Fatal(err)
	}
	moved, err := c.Leader(ctx, topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	if moved == leader {
		t.Fatalf("got leader %d after killing it, want another node", moved)
	}
	t.Logf("kill -9 of leader %d: leadership on %d after %s", leader, moved, time.Since(start).Round(time.Millisecond))

	start = time.Now()
	if err := c.Start(ctx, leader); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitLeaders(ctx, topic, 3); err != nil {
		t.Fatal(err)
	}
	t.Logf("node %d back and in sync after %s", leader, time.Since(start).Round(time.Millisecond))

	start = time.Now()
	if err := c.Stop(ctx, moved); err != nil {
		t.Fatal(err)
	}
	if c.Running(moved) {
		t.Fatalf("node %d runs after Stop", moved)
	}
	if err := c.WaitLeaders(ctx, topic, 2); err != nil {
		t.Fatal(err)
	}
	t.Logf("clean stop of node %d: %s", moved, time.Since(start).Round(time.Millisecond))

	start = time.Now()
	for _, id := range c.NodeIDs() {
		c.Kill(id)
	}
	if err := c.StartNodes(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitLeaders(ctx, topic, 3); err != nil {
		t.Fatal(err)
	}
	t.Logf("whole cluster killed and started again: %s", time.Since(start).Round(time.Millisecond))

	if err := c.SetBrokerDefaults(ctx, map[string]string{"log.segment.bytes": "8388608"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	createTopic(t, ctx, c.Brokers(), topic, 1) // the name is free again
}

func createTopic(t *testing.T, ctx context.Context, brokers []string, name string, partitions int32) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrCreateTopicsRequest()
	req.TimeoutMillis = 10_000
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = name, partitions, 3
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if err := kerr.ErrorForCode(resp.Topics[0].ErrorCode); err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
}
