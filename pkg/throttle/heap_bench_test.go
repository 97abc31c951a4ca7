package throttle

import (
	"context"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
)

// BenchmarkHeapPerThrottle applies 100,000 throttles (one per customer) through the
// table's apply path, as a rebuild does, and reports the heap the table keeps per
// throttle. Kafka is left out: the in-process broker shares this heap and would blur
// the figure.
func BenchmarkHeapPerThrottle(b *testing.B) {
	codec, err := NewCodec(RegistryConfig{URL: "http://127.0.0.1:1"}, "heap")
	if err != nil {
		b.Fatal(err)
	}
	codec.mu.Lock()
	codec.storeLocked(1, codec.writer) // as if registered: no registry needed
	codec.mu.Unlock()
	codec.writeID.Store(1)
	now := time.Now().UTC().Truncate(time.Millisecond)
	msgs := make([]kafka.Message, benchCustomers)
	for i := range msgs {
		c := "customer-" + strconv.Itoa(i)
		r := Record{ID: uuid.NewString(), Customer: c, Limit: 20, Window: time.Minute, CreatedAt: now, ExpiresAt: now.Add(time.Hour),
			Reason: Reason{Kind: ReasonAutomatic, Note: "share 0.91", Metric: "traffic_share", Value: 0.91}, SetBy: "processing-1"}
		v, err := codec.Encode(&r)
		if err != nil {
			b.Fatal(err)
		}
		msgs[i] = kafka.Message{Key: key(c), Value: v, Time: now}
	}
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		t, err := NewTable(cluster.Config{Brokers: []string{"127.0.0.1:1"}}, "heap", codec)
		if err != nil {
			b.Fatal(err)
		}
		for _, m := range msgs {
			if err := t.apply(context.Background(), m); err != nil {
				b.Fatal(err)
			}
		}
		t.makeVisible()
		runtime.GC()
		runtime.ReadMemStats(&after)
		if n := t.Stats().Active; n != benchCustomers {
			b.Fatalf("got %d active, want %d", n, benchCustomers)
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/benchCustomers, "heap-B/throttle")
		runtime.KeepAlive(t)
	}
}
