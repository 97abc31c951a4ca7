package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/envconfig"
	"github.com/sluice-dev/sluice/pkg/throttle/event"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
	"github.com/sluice-dev/sluice/services/ingestion/internal/config"
	"github.com/sluice-dev/sluice/services/ingestion/internal/kafkaconn"
)

// benchCustomers spread the events over the events topic's partitions. Every one has a
// throttle with a limit it never reaches, so each request goes through the limiter.
var benchCustomers = func() []string {
	c := make([]string, 64)
	for i := range c {
		c[i] = fmt.Sprintf("customer-%02d", i)
	}
	return c
}()

const benchPayload = `{"kind":"page_view","path":"/pricing","session":"5f2b9c1e","ms":132}`

// benchStack is a broker, registry and one ingestion replica for benchmarks.
type benchStack struct {
	stack  *throttletest.Stack
	cfg    config.Config
	url    string
	client *http.Client
}

func startBench(b *testing.B) *benchStack {
	b.Helper()
	s := throttletest.Start(b, throttletest.Options{})
	s.CreateTopic(b, throttleTopic, 3)
	p, err := throttle.NewPublisher(s.Kafka(), throttleTopic, s.Codec(b, throttleTopic))
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	now := time.Now().UTC().Truncate(time.Millisecond)
	for _, c := range benchCustomers {
		if err := p.Set(context.Background(), throttle.Record{ID: "bench-" + c, Customer: c, Limit: 1 << 50, Window: time.Minute,
			CreatedAt: now, ExpiresAt: now.Add(time.Hour), Reason: throttle.Reason{Note: "bench"}}); err != nil {
			b.Fatal(err)
		}
	}

	var cfg config.Config
	if err := envconfig.Load(&cfg); err != nil {
		b.Fatal(err)
	}
	cfg.Brokers, cfg.RegistryURL, cfg.ThrottleTopic = s.Brokers(), s.RegistryURL(), throttleTopic
	cfg.ReplicaID, cfg.EventsPartitions = "bench", 6
	cfg.BufferEvents = 1 << 20
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, zap.NewNop(), cfg, ln) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("serve: %v", err)
		}
	})
	bs := &benchStack{stack: s, cfg: cfg, url: "http://" + ln.Addr().String() + "/v1/events",
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, MaxConnsPerHost: 1024}}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		// Ready, and the events topic exists: one event goes all the way through.
		if bs.post(bs.body(0, 1)) == http.StatusAccepted {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("ingestion not accepting events within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return bs
}

// body is a request of n events of one customer.
func (bs *benchStack) body(seq uint64, n int) []byte {
	c := benchCustomers[seq%uint64(len(benchCustomers))]
	var buf bytes.Buffer
	if n > 1 {
		buf.WriteByte('[')
	}
	for i := range n {
		if i > 0 {
			buf.WriteByte(',')
		}
		fmt.Fprintf(&buf, `{"customer":%q,"id":"%d-%d","payload":%s}`, c, seq, i, benchPayload)
	}
	if n > 1 {
		buf.WriteByte(']')
	}
	return buf.Bytes()
}

func (bs *benchStack) post(body []byte) int {
	resp, err := bs.client.Post(bs.url, "application/json", bytes.NewReader(body))
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// rawMessages are what ingestion writes for the same request: the encoded event keyed
// by customer.
func rawMessages(seq uint64, n int) []kafka.Message {
	c := benchCustomers[seq%uint64(len(benchCustomers))]
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		e := event.Event{ID: fmt.Sprintf("%d-%d", seq, i), Customer: c, Payload: []byte(benchPayload), IngestedAt: time.Now().UTC()}
		v, _ := event.Encode(&e)
		msgs[i] = kafka.Message{Key: []byte(c), Value: v}
	}
	return msgs
}

// BenchmarkIngest measures events/s through ingestion's HTTP API into the events topic
// on the in-process broker, beside a kafka-go Writer with the same settings (acks=all,
// Murmur2, the same BatchTimeout) producing the same messages, from as many concurrent
// callers. Each op is one request (or one WriteMessages call) of `batch` events.
func BenchmarkIngest(b *testing.B) {
	bs := startBench(b)
	// Requests and messages are made before the clock starts, and each caller cycles
	// through its own: neither arm's figure includes making its inputs, which would
	// otherwise take a large share of the same two cores.
	const callers, perCaller = 64, 8
	for _, batch := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("http/batch=%d", batch), func(b *testing.B) {
			bodies := make([][]byte, callers*perCaller)
			for i := range bodies {
				bodies[i] = bs.body(uint64(i), batch)
			}
			var next, failed atomic.Int64
			b.SetParallelism(callers / runtime.GOMAXPROCS(0))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				mine := bodies[(next.Add(1)-1)%callers*perCaller:][:perCaller]
				for i := 0; pb.Next(); i++ {
					if bs.post(mine[i%perCaller]) != http.StatusAccepted {
						failed.Add(1)
					}
				}
			})
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
			if failed.Load() > 0 {
				b.Fatalf("%d requests not accepted", failed.Load())
			}
		})
		b.Run(fmt.Sprintf("kafka-go/batch=%d", batch), func(b *testing.B) {
			w := eventsWriter(bs.stack.Kafka(), bs.cfg) // the settings ingestion writes with
			defer kafkaconn.Close(w)
			inputs := make([][]kafka.Message, callers*perCaller)
			for i := range inputs {
				inputs[i] = rawMessages(uint64(i), batch)
			}
			var next atomic.Int64
			b.SetParallelism(callers / runtime.GOMAXPROCS(0))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				mine := inputs[(next.Add(1)-1)%callers*perCaller:][:perCaller]
				for i := 0; pb.Next(); i++ {
					if err := w.WriteMessages(context.Background(), mine[i%perCaller]...); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkIngestLatency is a load harness, run once whatever b.N (use -benchtime=1x): it
// measures the most single-event requests per second ingestion sustains, then offers half
// that rate open-loop for a few seconds and reports latency percentiles. Latency is from
// when a request was due to when its 202 arrived, so a stall that delays the requests
// behind it counts against all of them (no coordinated omission).
func BenchmarkIngestLatency(b *testing.B) {
	bs := startBench(b)
	b.ResetTimer()

	// Closed loop, 64 callers, 3s: the sustainable rate.
	var seq atomic.Uint64
	var count atomic.Int64
	stop := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for time.Now().Before(stop) {
				if bs.post(bs.body(seq.Add(1), 1)) == http.StatusAccepted {
					count.Add(1)
				}
			}
		})
	}
	wg.Wait()
	peak := float64(count.Load()) / 3
	rate := peak / 2

	// Open loop at half the peak for 5s.
	const run = 5 * time.Second
	interval := time.Duration(float64(time.Second) / rate)
	total := int(run / interval)
	lat := make([]time.Duration, total)
	var refused atomic.Int64
	start := time.Now().Add(10 * time.Millisecond)
	due := make(chan int, total)
	for i := range total {
		due <- i
	}
	close(due)
	for range 512 { // enough callers that none is late for its slot
		wg.Go(func() {
			for i := range due {
				at := start.Add(time.Duration(i) * interval)
				time.Sleep(time.Until(at))
				if bs.post(bs.body(seq.Add(1), 1)) != http.StatusAccepted {
					refused.Add(1)
				}
				lat[i] = time.Since(at)
			}
		})
	}
	wg.Wait()
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(peak, "peak-req/s")
	b.ReportMetric(rate, "offered-req/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(pct(0.999), "p999-ms")
	if refused.Load() > 0 {
		b.Errorf("%d of %d requests not accepted at half the peak rate", refused.Load(), total)
	}
	b.Logf("peak %.0f req/s; at %.0f req/s for %s: p50 %.2fms p99 %.2fms p99.9 %.2fms max %.2fms",
		peak, rate, run, pct(0.5), pct(0.99), pct(0.999), pct(1))
}
