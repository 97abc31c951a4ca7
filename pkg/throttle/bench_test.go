package throttle_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
)

// benchRecords is the size of the rebuild benchmark's topic (BENCH_RECORDS, default
// 1,000,000 records over a tenth as many customers).
func benchRecords() int {
	if n, err := strconv.Atoi(os.Getenv("BENCH_RECORDS")); err == nil && n > 0 {
		return n
	}
	return 1_000_000
}

// rebuildTopic writes the rebuild benchmarks' topic: benchRecords() records over a
// tenth as many customers, six partitions.
func rebuildTopic(b *testing.B) (s *throttletest.Stack, topic string, partitions, customers int) {
	n := benchRecords()
	customers = n / 10
	s = throttletest.Start(b, throttletest.Options{})
	topic, partitions = "bench-rebuild", 6
	s.CreateTopic(b, topic, partitions)
	codec := s.Codec(b, topic)
	now := time.Now().UTC().Truncate(time.Millisecond)
	w := &kafka.Writer{Addr: kafka.TCP(s.Brokers()...), Topic: topic, Balancer: &kafka.Murmur2Balancer{}, BatchSize: 5000, BatchTimeout: 5 * time.Millisecond, RequiredAcks: kafka.RequireAll}
	batch := make([]kafka.Message, 0, 10000)
	for i := range n {
		c := "customer-" + strconv.Itoa(i%customers)
		r := throttle.Record{ID: uuid.NewString(), Customer: c, Limit: int64(i % 100), Window: time.Minute, CreatedAt: now, ExpiresAt: now.Add(time.Hour),
			Reason: throttle.Reason{Kind: throttle.ReasonAutomatic, Note: "bench", Metric: "traffic_share", Value: 0.5}, SetBy: "processing-1"}
		v, err := codec.Encode(&r)
		if err != nil {
			b.Fatal(err)
		}
		batch = append(batch, kafka.Message{Key: []byte(c), Value: v})
		if len(batch) == cap(batch) || i == n-1 {
			if err := w.WriteMessages(context.Background(), batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	_ = w.Close()
	return s, topic, partitions, customers
}

// rebuildRaw reads the topic with kafka-go readers (no decode, no table) and returns
// records/s.
func rebuildRaw(b *testing.B, s *throttletest.Stack, topic string, partitions int) float64 {
	start := time.Now()
	var wg sync.WaitGroup
	for p := range partitions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			readRaw(b, s.Brokers(), topic, p)
		}()
	}
	wg.Wait()
	return float64(benchRecords()) / time.Since(start).Seconds()
}

// rebuildTable rebuilds a Table from the topic and returns records/s and the heap the
// table keeps per throttle.
func rebuildTable(b *testing.B, s *throttletest.Stack, topic string, customers int) (perSec, heapPer float64) {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	tb, err := throttle.NewTable(s.Kafka(), topic, s.Codec(b, topic))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = tb.Run(ctx); close(done) }()
	if err := tb.WaitReady(context.Background()); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	cancel()
	<-done // readers closed: what remains on the heap is the table
	runtime.GC()
	runtime.ReadMemStats(&after)
	if active := tb.Stats().Active; active != customers {
		b.Fatalf("got %d active throttles, want %d", active, customers)
	}
	runtime.KeepAlive(tb)
	return float64(benchRecords()) / elapsed.Seconds(), float64(after.HeapAlloc-before.HeapAlloc) / float64(customers)
}

// BenchmarkRebuild compares a Table's rebuild (decode, validate, apply) with reading the
// same topic raw with kafka-go readers (no decode, no map), in the same run.
func BenchmarkRebuild(b *testing.B) {
	s, topic, partitions, customers := rebuildTopic(b)
	b.Run("raw-kafka-go", func(b *testing.B) {
		for b.Loop() {
			b.ReportMetric(rebuildRaw(b, s, topic, partitions), "records/s")
		}
	})
	b.Run("table", func(b *testing.B) {
		for b.Loop() {
			perSec, heapPer := rebuildTable(b, s, topic, customers)
			b.ReportMetric(perSec, "records/s")
			b.ReportMetric(heapPer, "heap-B/throttle")
		}
	})
}

// BenchmarkRebuildRatio runs the two arms of BenchmarkRebuild in turns, so both see the
// same machine, and reports the median of the table's records/s over raw's for seven
// pairs (run it with -benchtime 1x).
func BenchmarkRebuildRatio(b *testing.B) {
	s, topic, partitions, customers := rebuildTopic(b)
	for b.Loop() {
		var ratios []float64
		for range 7 {
			raw := rebuildRaw(b, s, topic, partitions)
			table, _ := rebuildTable(b, s, topic, customers)
			ratios = append(ratios, table/raw)
			b.Logf("table %.0f records/s, raw %.0f records/s: %.0f%%", table, raw, 100*table/raw)
		}
		sort.Float64s(ratios)
		b.ReportMetric(100*ratios[len(ratios)/2], "median-%-of-raw")
		b.ReportMetric(100*ratios[0], "min-%-of-raw")
	}
}

// readRaw reads a partition from its first offset to the end offset it had at start.
func readRaw(b *testing.B, brokers []string, topic string, p int) {
	conn, err := kafka.DialLeader(context.Background(), "tcp", brokers[0], topic, p)
	if err != nil {
		b.Fatal(err)
	}
	first, last, err := conn.ReadOffsets()
	_ = conn.Close()
	if err != nil {
		b.Fatal(err)
	}
	if first >= last {
		return
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 500 * time.Millisecond})
	defer r.Close()
	for {
		m, err := r.FetchMessage(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if m.Offset+1 >= last {
			return
		}
	}
}

// BenchmarkPropagation publishes throttles one at a time and measures how long each takes
// to be visible in three independent Tables (the slowest of the three). In the same run
// its baseline is raw kafka-go: the same record produced with acks=all
// (cluster.NewWriter, as the Publisher writes) and fetched by three independent sets of
// partition Readers; the ratios are Sluice's p50 and p99 over the baseline's.
func BenchmarkPropagation(b *testing.B) {
	s := throttletest.Start(b, throttletest.Options{})
	const topic, rawTopic = "bench-propagation", "bench-propagation-raw"
	const partitions, tables = 6, 3
	s.CreateTopic(b, topic, partitions)
	s.CreateTopic(b, rawTopic, partitions)
	var mu sync.Mutex
	seen := map[string]int{}
	arrived := make(chan string, 1024)
	observe := func(id string) {
		mu.Lock()
		seen[id]++
		all := seen[id] == tables
		mu.Unlock()
		if all {
			arrived <- id
		}
	}
	for range tables {
		tb, err := throttle.NewTable(s.Kafka(), topic, s.Codec(b, topic), throttle.WithObserver(func(c throttle.Change) {
			if c.Kind == throttle.ChangeSet {
				observe(c.Record.ID)
			}
		}))
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = tb.Run(ctx); close(done) }()
		b.Cleanup(func() { cancel(); <-done })
		if err := tb.WaitReady(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	rawArrived := make(chan string, 1024)
	rawSeen := map[string]int{}
	var rawMu sync.Mutex
	rctx, stopRaw := context.WithCancel(context.Background())
	var readers sync.WaitGroup
	b.Cleanup(func() { stopRaw(); readers.Wait() })
	for range tables {
		for p := range partitions {
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: s.Brokers(), Topic: rawTopic, Partition: p, MinBytes: 1, MaxBytes: 1 << 20, MaxWait: time.Second})
			readers.Go(func() {
				defer r.Close()
				for {
					m, err := r.ReadMessage(rctx)
					if err != nil {
						return
					}
					id := string(m.Key)
					rawMu.Lock()
					rawSeen[id]++
					all := rawSeen[id] == tables
					rawMu.Unlock()
					if all {
						rawArrived <- id
					}
				}
			})
		}
	}
	codec := s.Codec(b, topic)
	pub, err := throttle.NewPublisher(s.Kafka(), topic, codec)
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	raw, err := cluster.NewWriter(s.Kafka(), rawTopic)
	if err != nil {
		b.Fatal(err)
	}
	defer cluster.CloseWriter(raw)
	const n = 1000
	quantiles := func(lat []time.Duration) (p50, p99, most time.Duration) {
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		return lat[n/2], lat[n*99/100], lat[n-1]
	}
	for b.Loop() {
		lat := make([]time.Duration, 0, n)
		rawLat := make([]time.Duration, 0, n)
		for i := range n {
			now := time.Now().UTC().Truncate(time.Millisecond)
			r := throttle.Record{ID: uuid.NewString(), Customer: fmt.Sprintf("customer-%d", i), Limit: 20, Window: time.Minute,
				CreatedAt: now, ExpiresAt: now.Add(10 * time.Minute), SetBy: "bench"}
			start := time.Now()
			if err := pub.Set(context.Background(), r); err != nil {
				b.Fatal(err)
			}
			for id := range arrived {
				if id == r.ID {
					break
				}
			}
			lat = append(lat, time.Since(start))

			value, err := codec.Encode(&r) // the same bytes, keyed by id to be told apart
			if err != nil {
				b.Fatal(err)
			}
			start = time.Now()
			if err := raw.WriteMessages(context.Background(), kafka.Message{Key: []byte(r.ID), Value: value}); err != nil {
				b.Fatal(err)
			}
			for id := range rawArrived {
				if id == r.ID {
					break
				}
			}
			rawLat = append(rawLat, time.Since(start))
		}
		p50, p99, most := quantiles(lat)
		r50, r99, _ := quantiles(rawLat)
		b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(most.Microseconds())/1000, "max-ms")
		b.ReportMetric(float64(r50.Microseconds())/1000, "raw-p50-ms")
		b.ReportMetric(float64(r99.Microseconds())/1000, "raw-p99-ms")
		b.ReportMetric(float64(p50)/float64(r50), "p50-x-raw")
		b.ReportMetric(float64(p99)/float64(r99), "p99-x-raw")
	}
}
