package consume_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/services/platform/event"
	"github.com/sluice-dev/sluice/services/processing/internal/consume"
)

// pipeEvents is how many events each run of BenchmarkPipeline moves.
const pipeEvents = 200_000

// BenchmarkPipeline measures processing's events/s (consume, decode, observe nothing,
// forward in batches, commit) beside a raw kafka-go pipe in the same run: a group
// Reader whose messages are gathered while they are at hand, written with the same
// writer settings (cluster.NewWriter: acks=all, Murmur2, same batch timeout) and
// committed. Both arms read the same events with replicas consumers in one group each,
// in turns; the ratio reported is the median of three pairs (run it with -benchtime 1x).
func BenchmarkPipeline(b *testing.B) {
	const partitions = 6
	c := newCluster(b, partitions)
	names := customers("bench", 50)
	now := time.Now()
	msgs := make([]kafka.Message, 0, 5000)
	for i := range pipeEvents {
		msgs = append(msgs, eventMsg(b, names[i%len(names)], now))
		if len(msgs) == cap(msgs) {
			c.produce(b, msgs...)
			msgs = msgs[:0]
		}
	}
	for _, replicas := range []int{1, 2} {
		b.Run(fmt.Sprintf("replicas-%d", replicas), func(b *testing.B) {
			for b.Loop() {
				var ratios []float64
				for i := range 3 {
					tag := fmt.Sprintf("%d-%d-%d", replicas, i, time.Now().UnixNano())
					proc := c.pipeRun(b, "proc-"+tag, replicas, c.processingArm)
					raw := c.pipeRun(b, "raw-"+tag, replicas, c.rawArm)
					ratios = append(ratios, proc/raw)
					b.Logf("%d replicas: processing %.0f events/s, raw kafka-go %.0f events/s: %.0f%%", replicas, proc, raw, 100*proc/raw)
				}
				slices.Sort(ratios)
				b.ReportMetric(100*ratios[1], "median-%-of-raw")
			}
		})
	}
}

// pipeRun runs replicas instances of arm in group until the group has committed every
// event, and returns events/s.
func (c *testCluster) pipeRun(b *testing.B, group string, replicas int, arm func(b *testing.B, ctx context.Context, group, out string)) float64 {
	out := "bench.out." + group
	if _, err := cluster.CreateTopics(context.Background(), c.kc, event.TopicConfig(out, 6, 3, 2)); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	start := time.Now()
	for range replicas {
		wg.Add(1)
		go func() { defer wg.Done(); arm(b, ctx, group, out) }()
	}
	for c.committedIn(b, group) < pipeEvents {
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	cancel()
	wg.Wait()
	return pipeEvents / elapsed.Seconds()
}

func (c *testCluster) processingArm(b *testing.B, ctx context.Context, group, out string) {
	fwd, err := cluster.NewWriter(c.kc, out)
	if err != nil {
		b.Error(err)
		return
	}
	defer cluster.CloseWriter(fwd)
	dlq, err := cluster.NewWriter(c.kc, dlqTopic)
	if err != nil {
		b.Error(err)
		return
	}
	defer cluster.CloseWriter(dlq)
	cons, err := consume.New(c.kc, eventsTopic, group, dlq, consume.NewForwarder(fwd), consume.Config{CommitInterval: 50 * time.Millisecond})
	if err != nil {
		b.Error(err)
		return
	}
	if err := cons.Run(ctx); err != nil {
		b.Error(err)
	}
}

func (c *testCluster) rawArm(b *testing.B, ctx context.Context, group, out string) {
	w, err := cluster.NewWriter(c.kc, out)
	if err != nil {
		b.Error(err)
		return
	}
	defer cluster.CloseWriter(w)
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: c.kc.Brokers, GroupID: group, Topic: eventsTopic, StartOffset: kafka.FirstOffset,
		MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 500 * time.Millisecond, QueueCapacity: 1000, CommitInterval: 0,
	})
	defer r.Close()
	batch := make([]kafka.Message, 0, 1000)
	for ctx.Err() == nil {
		batch = batch[:0]
		m, err := r.FetchMessage(ctx)
		if err != nil {
			continue
		}
		batch = append(batch, m)
		for len(batch) < cap(batch) { // what else is at hand
			fctx, cancel := context.WithTimeout(ctx, time.Millisecond)
			m, err := r.FetchMessage(fctx)
			cancel()
			if err != nil {
				break
			}
			batch = append(batch, m)
		}
		outs := make([]kafka.Message, len(batch))
		for i, m := range batch {
			outs[i] = kafka.Message{Key: m.Key, Value: m.Value, Headers: m.Headers}
		}
		if err := w.WriteMessages(ctx, outs...); err != nil {
			continue
		}
		_ = r.CommitMessages(ctx, batch...)
	}
}

// committedIn is how many events group has committed over the events topic.
func (c *testCluster) committedIn(b *testing.B, group string) int64 {
	cl := &kafka.Client{Addr: kafka.TCP(c.kc.Brokers...), Timeout: 5 * time.Second}
	ps := make([]int, 6)
	for i := range ps {
		ps[i] = i
	}
	resp, err := cl.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{eventsTopic: ps}})
	if err != nil || resp.Error != nil {
		return 0
	}
	var n int64
	for _, p := range resp.Topics[eventsTopic] {
		n += max(p.CommittedOffset, 0)
	}
	return n
}
