package audit

import (
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// BenchmarkAccepted is what counting costs ingestion per request, by batch size: the
// figure to hold against a request's own cost (BenchmarkAuditOverhead in
// services/ingestion measures it end to end).
func BenchmarkAccepted(b *testing.B) {
	for _, batch := range []int{1, 10, 100} {
		b.Run("batch="+itoa(batch), func(b *testing.B) {
			tl, _ := New(Ingestion, "bench", &memTopic{})
			now := time.Now()
			msgs := make([]kafka.Message, batch)
			for i := range msgs {
				msgs[i] = kafka.Message{Partition: 2, Time: now} // a request is one customer's: one partition
			}
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					tl.Accepted(msgs)
				}
			})
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/event")
		})
	}
}

// BenchmarkHandled is what counting costs processing per record.
func BenchmarkHandled(b *testing.B) {
	tl, _ := New(Processing, "bench", &memTopic{})
	now := time.Now()
	for i := 0; b.Loop(); i++ {
		tl.Handled(i%6, int64(i), now, "", false)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
