package consume_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
	"github.com/sluice-dev/sluice/services/platform/event"
	"github.com/sluice-dev/sluice/services/processing/internal/consume"
)

const (
	eventsTopic    = "events"
	processedTopic = "events.processed"
	dlqTopic       = "events.dlq"
	group          = "processing-test"
)

// testCluster is an in-process broker with the three event topics.
type testCluster struct {
	stack *throttletest.Stack
	kc    cluster.Config
}

func newCluster(t testing.TB, eventPartitions int) *testCluster {
	t.Helper()
	stack := throttletest.Start(t, throttletest.Options{})
	kc := stack.Kafka()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := cluster.CreateTopics(ctx, kc,
		event.TopicConfig(eventsTopic, eventPartitions, 3, 2),
		event.TopicConfig(processedTopic, 1, 1, 1),
		event.TopicConfig(dlqTopic, 1, 1, 1),
	)
	if err != nil {
		t.Fatalf("create topics: %v", err)
	}
	return &testCluster{stack: stack, kc: kc}
}

// produce writes records to the events topic the way ingestion does: keyed by customer,
// Murmur2-partitioned.
func (c *testCluster) produce(t testing.TB, msgs ...kafka.Message) {
	t.Helper()
	w, err := cluster.NewWriter(c.kc, eventsTopic)
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.CloseWriter(w)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("produce %d events: %v", len(msgs), err)
	}
}

func eventMsg(t testing.TB, customer string, ingestedAt time.Time) kafka.Message {
	t.Helper()
	b, err := event.Encode(&event.Event{Customer: customer, IngestedAt: ingestedAt, Payload: json.RawMessage(`{"n":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	return kafka.Message{Key: []byte(customer), Value: b}
}

// running is a consumer running in the background.
type running struct {
	cancel context.CancelFunc
	done   chan error
	c      *consume.Consumer
}

func (c *testCluster) start(t *testing.T, h consume.Handler, cfg consume.Config, opts ...consume.Option) *running {
	t.Helper()
	dlq, err := cluster.NewWriter(c.kc, dlqTopic)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.CloseWriter(dlq) })
	cons, err := consume.New(c.kc, eventsTopic, group, dlq, h, cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1), c: cons}
	go func() { r.done <- cons.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop shuts the consumer down as SIGTERM does. It returns what Run returned.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	r.cancel = nil
	var err error
	select {
	case err = <-r.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("consumer did not stop within 30s")
	}
	return err
}

// committed returns the group's committed offset per partition of the events topic.
func (c *testCluster) committed(t *testing.T, partitions int) map[int]int64 {
	t.Helper()
	cl := &kafka.Client{Addr: kafka.TCP(c.kc.Brokers...), Timeout: 5 * time.Second}
	ps := make([]int, partitions)
	for i := range ps {
		ps[i] = i
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{eventsTopic: ps}})
	if err != nil {
		t.Fatalf("offset fetch: %v", err)
	}
	out := map[int]int64{}
	if errors.Is(resp.Error, kafka.GroupIdNotFound) {
		return out // the consumer has not joined yet: nothing committed
	}
	if resp.Error != nil {
		t.Fatalf("offset fetch: %v", resp.Error)
	}
	for _, p := range resp.Topics[eventsTopic] {
		if p.Error != nil {
			t.Fatalf("offset fetch partition %d: %v", p.Partition, p.Error)
		}
		out[p.Partition] = max(p.CommittedOffset, 0) // -1: nothing committed
	}
	return out
}

func sum(m map[int]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// waitCommitted waits until the group has committed want records in all.
func (c *testCluster) waitCommitted(t *testing.T, partitions int, want int64) map[int]int64 {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := c.committed(t, partitions)
		if sum(got) == want {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("committed offsets: got %v (%d records), want %d records", got, sum(got), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readAll reads n records of a one-partition topic from its start.
func (c *testCluster) readAll(t *testing.T, topic string, n int) []kafka.Message {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: c.kc.Brokers, Topic: topic, Partition: 0, MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond,
	})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := make([]kafka.Message, 0, n)
	for len(out) < n {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("read %s: got %d records, want %d: %v", topic, len(out), n, err)
		}
		out = append(out, m)
	}
	return out
}

func header(m kafka.Message, key string) (string, bool) {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

func customers(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%02d", prefix, i)
	}
	return out
}
