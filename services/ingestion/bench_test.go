package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
	"github.com/sluice-dev/sluice/services/ingestion/internal/config"
	"github.com/sluice-dev/sluice/services/platform/envconfig"
	"github.com/sluice-dev/sluice/services/platform/event"
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
	stack *throttletest.Stack
	cfg   config.Config
	addr  string // the replica's host:port
}

func startBench(b *testing.B) *benchStack {
	b.Helper()
	// The in-process broker keeps each segment in one growing byte slice, copied whole on
	// every doubling: at the default 100 MiB segments those copies stall whichever arm is
	// running when they happen, and the arms' figures swing by half from run to run.
	// Smaller segments bound each copy, as a real broker's page cache never copies. The
	// broker also keeps every event in this process's heap: settle drops all but the last
	// segments of each partition before each arm, so that each starts from the same heap.
	s := throttletest.Start(b, throttletest.Options{BrokerConfigs: map[string]string{
		"log.segment.bytes": strconv.Itoa(8 << 20), "log.retention.bytes": strconv.Itoa(16 << 20),
	}})
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
	return startReplica(b, s, cfg)
}

// startReplica runs one ingestion replica with cfg on s, and waits until it accepts
// events.
func startReplica(b *testing.B, s *throttletest.Stack, cfg config.Config) *benchStack {
	b.Helper()
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
	bs := &benchStack{stack: s, cfg: cfg, addr: ln.Addr().String()}
	c := bs.dial(b)
	deadline := time.Now().Add(30 * time.Second)
	for {
		// Ready, and the events topic exists: one event goes all the way through.
		status, err := c.do(request(bs.body(0, 1)))
		if err == nil && status == http.StatusAccepted {
			break
		}
		if err != nil {
			c = bs.dial(b)
		}
		if time.Now().After(deadline) {
			b.Fatal("ingestion not accepting events within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return bs
}

// settle applies the broker's retention and collects garbage, outside the timer.
func (bs *benchStack) settle() {
	bs.stack.Cluster().ApplyRetention()
	runtime.GC()
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

// conn is one keep-alive HTTP/1.1 connection that sends prepared requests and reads
// their answers with as little work as it can: the load generator, like wrk, must not
// take the two cores the service under test runs on (net/http's client spends about a
// third of all CPU in BenchmarkIngest). Requests are written whole in one syscall and
// answers are parsed only as far as the status code and Content-Length.
type conn struct {
	c net.Conn
	r *bufio.Reader
}

func (bs *benchStack) dial(b *testing.B) *conn {
	c, err := net.Dial("tcp", bs.addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	return &conn{c: c, r: bufio.NewReaderSize(c, 4096)}
}

// request is body as a complete POST /v1/events request.
func request(body []byte) []byte {
	req := fmt.Appendf(nil, "POST /v1/events HTTP/1.1\r\nHost: ingestion\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
	return append(req, body...)
}

// do sends one prepared request and returns the answer's status code.
func (c *conn) do(req []byte) (int, error) {
	if _, err := c.c.Write(req); err != nil {
		return 0, err
	}
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	// "HTTP/1.1 202 Accepted\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	length := -1
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(line) <= 2 { // the blank line ending the header
			break
		}
		if name, value, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(name, []byte("Content-Length")) {
			if length, err = strconv.Atoi(string(bytes.TrimSpace(value))); err != nil {
				return 0, fmt.Errorf("bad Content-Length %q", value)
			}
		}
	}
	if length < 0 {
		return 0, errors.New("answer without Content-Length")
	}
	if _, err := c.r.Discard(length); err != nil {
		return 0, err
	}
	return status, nil
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

// callers is how many concurrent callers each arm of BenchmarkIngest has; each cycles
// through perCaller prepared inputs.
const callers, perCaller = 64, 8

// An arm is one way of getting events into the events topic: op sends caller c's i-th
// request (or WriteMessages call) of a batch of events.
type arm struct {
	op    func(c, i int) error
	close func()
}

// httpArm posts requests of batch events to the replica, one keep-alive connection per
// caller. Requests are made before the clock starts, and each caller cycles through its
// own: no arm's figure includes making its inputs, which would otherwise take a large
// share of the same two cores.
func (bs *benchStack) httpArm(b *testing.B, batch int) arm {
	reqs := make([][]byte, callers*perCaller)
	for i := range reqs {
		reqs[i] = request(bs.body(uint64(i), batch))
	}
	conns := make([]*conn, callers)
	for i := range conns {
		conns[i] = bs.dial(b)
	}
	return arm{op: func(c, i int) error {
		status, err := conns[c].do(reqs[c*perCaller+i%perCaller])
		if err == nil && status != http.StatusAccepted {
			err = fmt.Errorf("status %d, want %d", status, http.StatusAccepted)
		}
		return err
	}, close: func() {}}
}

// rawArm writes the same messages straight to a kafka-go Writer with the replica's
// settings.
func (bs *benchStack) rawArm(batch int) arm {
	w, err := eventsWriter(bs.stack.Kafka(), bs.cfg)
	if err != nil {
		panic(err)
	}
	inputs := make([][]kafka.Message, callers*perCaller)
	for i := range inputs {
		inputs[i] = rawMessages(uint64(i), batch)
	}
	return arm{op: func(c, i int) error {
		return w.WriteMessages(context.Background(), inputs[c*perCaller+i%perCaller]...)
	}, close: func() { cluster.CloseWriter(w) }}
}

// BenchmarkIngest measures events/s through ingestion's HTTP API into the events topic
// on the in-process broker, beside a kafka-go Writer with the same settings (acks=all,
// Murmur2, the same BatchTimeout) producing the same messages, from as many concurrent
// callers. Each op is one request (or one WriteMessages call) of `batch` events.
// BenchmarkIngestRatio runs the same arms in turns, for a ratio that noise moves less.
func BenchmarkIngest(b *testing.B) {
	bs := startBench(b)
	for _, batch := range []int{1, 10, 100} {
		for _, a := range []struct {
			name string
			make func(*testing.B) arm
		}{
			{"http", func(b *testing.B) arm { return bs.httpArm(b, batch) }},
			{"kafka-go", func(*testing.B) arm { return bs.rawArm(batch) }},
		} {
			b.Run(fmt.Sprintf("%s/batch=%d", a.name, batch), func(b *testing.B) {
				arm := a.make(b) // its connections close with this run
				defer arm.close()
				var next atomic.Int64
				b.SetParallelism(callers / runtime.GOMAXPROCS(0))
				bs.settle()
				b.ResetTimer()
				cpu := startCPU()
				b.RunParallel(func(pb *testing.PB) {
					me := int((next.Add(1) - 1) % callers)
					for i := 0; pb.Next(); i++ {
						if err := arm.op(me, i); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
				cpu.report(b, b.N*batch)
			})
		}
	}
}

// BenchmarkIngestRatio is a harness, run once whatever b.N (use -benchtime=1x): for each
// batch size, BenchmarkIngest's two arms take turns for ratioRounds pairs of one second
// each, the first arm alternating, and it reports the median and lowest http/kafka-go
// ratio of events/s over the pairs. On a shared machine the speed drifts from one second
// to the next; arms measured seconds apart and in a fixed order (as BenchmarkIngest's
// are) carry that drift into their ratio, and a single pair can land on a stall.
func BenchmarkIngestRatio(b *testing.B) {
	bs := startBench(b)
	for _, batch := range []int{1, 10, 100} {
		h, r := bs.httpArm(b, batch), bs.rawArm(batch)
		inTurns(b, batch, 6, "http", "kafka-go", "%",
			func() float64 { return bs.rate(b, h, batch, time.Second) },
			func() float64 { return bs.rate(b, r, batch, time.Second) })
		r.close()
	}
}

// inTurns measures two arms' events/s in rounds of one pair, the first arm alternating,
// and reports the median and lowest ratio of a's rate to z's.
func inTurns(b *testing.B, batch, rounds int, aName, zName, unit string, a, z func() float64) {
	ratios := make([]float64, 0, rounds)
	for round := range rounds {
		var ar, zr float64
		if round%2 == 0 {
			ar, zr = a(), z()
		} else {
			zr, ar = z(), a()
		}
		ratios = append(ratios, ar/zr)
		b.Logf("batch=%d pair %d: %s %.0f events/s, %s %.0f events/s: %.1f%%", batch, round+1, aName, ar, zName, zr, 100*ar/zr)
	}
	slices.Sort(ratios)
	median := (ratios[(rounds-1)/2] + ratios[rounds/2]) / 2
	b.ReportMetric(100*median, fmt.Sprintf("median-%s/batch=%d", unit, batch))
	b.ReportMetric(100*ratios[0], fmt.Sprintf("lowest-%s/batch=%d", unit, batch))
	b.Logf("batch=%d: %s/%s median %.1f%%, lowest %.1f%%, highest %.1f%% of %d pairs",
		batch, aName, zName, 100*median, 100*ratios[0], 100*ratios[len(ratios)-1], rounds)
}

// rate runs a's callers for d and returns the events/s they wrote.
func (bs *benchStack) rate(b *testing.B, a arm, batch int, d time.Duration) float64 {
	bs.settle()
	var ops atomic.Int64
	start := time.Now()
	stop := start.Add(d)
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			for i := 0; time.Now().Before(stop); i++ {
				if err := a.op(c, i); err != nil {
					b.Error(err)
					return
				}
				ops.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(ops.Load()*int64(batch)) / time.Since(start).Seconds()
}

// cpuClock is the process's CPU time (user and system) since it started, which tells a
// benchmark that is short of CPU from one that waits (at batch=1 each op waits for
// about one BatchTimeout). Everything runs in this process: broker, service, callers.
type cpuClock struct {
	start int64 // processCPU
	wall  time.Time
}

func startCPU() cpuClock { return cpuClock{start: processCPU(), wall: time.Now()} }

// report adds CPU microseconds per event and the share of the machine's cores used.
func (c cpuClock) report(b *testing.B, events int) {
	used := time.Duration(processCPU() - c.start)
	b.ReportMetric(float64(used.Microseconds())/float64(events), "cpu-µs/event")
	b.ReportMetric(100*used.Seconds()/time.Since(c.wall).Seconds()/float64(runtime.NumCPU()), "cpu-%")
}

func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
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
		c := bs.dial(b)
		wg.Go(func() {
			for time.Now().Before(stop) {
				if status, err := c.do(request(bs.body(seq.Add(1), 1))); err == nil && status == http.StatusAccepted {
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
		c := bs.dial(b)
		wg.Go(func() {
			for i := range due {
				at := start.Add(time.Duration(i) * interval)
				time.Sleep(time.Until(at))
				if status, err := c.do(request(bs.body(seq.Add(1), 1))); err != nil || status != http.StatusAccepted {
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

// BenchmarkAuditOverhead is a harness like BenchmarkIngestRatio (use -benchtime=1x): two
// replicas of one stack, one with the audit and one without (AUDIT_ENABLED=false), take
// turns, and it reports the median and lowest ratio of their accepted events/s, audit
// on over off, per batch size.
func BenchmarkAuditOverhead(b *testing.B) {
	on := startBench(b)
	if !on.cfg.AuditEnabled {
		b.Fatal("the default configuration has no audit")
	}
	offCfg := on.cfg
	offCfg.ReplicaID, offCfg.AuditEnabled = "bench-no-audit", false
	off := startReplica(b, on.stack, offCfg)
	for _, batch := range []int{1, 10, 100} {
		a, z := on.httpArm(b, batch), off.httpArm(b, batch)
		inTurns(b, batch, 8, "audit on", "off", "on/off-%",
			func() float64 { return on.rate(b, a, batch, time.Second) },
			func() float64 { return off.rate(b, z, batch, time.Second) })
	}
}
