package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap/zaptest"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/follow"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
	"github.com/sluice-dev/sluice/services/ingestion/internal/config"
	"github.com/sluice-dev/sluice/services/platform/audit"
	"github.com/sluice-dev/sluice/services/platform/envconfig"
	"github.com/sluice-dev/sluice/services/platform/event"
	"github.com/sluice-dev/sluice/services/platform/mirror"
)

const throttleTopic = "sluice.throttles"

// testConfig is the defaults, pointed at the in-process stack, with fast heartbeats.
func testConfig(t *testing.T, s *throttletest.Stack, replica string) config.Config {
	t.Helper()
	var cfg config.Config
	if err := envconfig.Load(&cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Brokers = s.Brokers()
	cfg.RegistryURL = s.RegistryURL()
	cfg.ThrottleTopic = throttleTopic
	cfg.ReplicaID = replica
	cfg.EventsPartitions = 3
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.MemberTTL = 500 * time.Millisecond
	cfg.ShutdownTimeout = 10 * time.Second
	cfg.Format = "console"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// service is one ingestion replica running serve on a loopback port.
type service struct {
	url    string
	cancel context.CancelFunc
	done   chan error
}

func startService(t *testing.T, cfg config.Config) *service {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	svc := &service{url: "http://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	log := zaptest.NewLogger(t).Named(cfg.ReplicaID)
	go func() { svc.done <- serve(ctx, log, cfg, ln) }()
	t.Cleanup(func() { svc.stop(t) })
	return svc
}

// stop shuts the replica down as SIGTERM would and checks it went cleanly.
func (s *service) stop(t *testing.T) {
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("serve did not return within 30s of cancellation")
	}
}

type reply struct {
	status int
	header http.Header
	body   string
}

func (s *service) do(t *testing.T, method, path, body string) reply {
	t.Helper()
	req, err := http.NewRequest(method, s.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

func (s *service) post(t *testing.T, body string) reply {
	t.Helper()
	return s.do(t, http.MethodPost, "/v1/events", body)
}

// eventually retries cond every 20ms until it holds or within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *service) waitReady(t *testing.T) {
	t.Helper()
	eventually(t, 20*time.Second, "replica ready", func() bool {
		return s.do(t, http.MethodGet, "/readyz", "").status == http.StatusOK
	})
}

func publisher(t *testing.T, s *throttletest.Stack) *throttle.Publisher {
	t.Helper()
	p, err := throttle.NewPublisher(s.Kafka(), throttleTopic, s.Codec(t, throttleTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func setThrottle(t *testing.T, p *throttle.Publisher, id, customer string, limit int64, window time.Duration) {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Set(ctx, throttle.Record{
		ID: id, Customer: customer, Limit: limit, Window: window, CreatedAt: now, ExpiresAt: now.Add(time.Hour),
		SetBy: "test", Reason: throttle.Reason{Kind: throttle.ReasonManual, Note: "test"},
	}); err != nil {
		t.Fatal(err)
	}
}

// readEvents reads every record of the events topic, on every partition, up to the end
// offsets it has now.
func readEvents(t *testing.T, s *throttletest.Stack, topic string) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl := &kafka.Client{Addr: kafka.TCP(s.Brokers()...)}
	meta, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		t.Fatal(err)
	}
	var reqs []kafka.OffsetRequest
	for _, tp := range meta.Topics {
		for _, p := range tp.Partitions {
			reqs = append(reqs, kafka.FirstOffsetOf(p.ID), kafka.LastOffsetOf(p.ID))
		}
	}
	offs, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		t.Fatal(err)
	}
	var out []kafka.Message
	for _, po := range offs.Topics[topic] {
		if po.Error != nil {
			t.Fatalf("list offsets of %s/%d: %v", topic, po.Partition, po.Error)
		}
		if po.LastOffset <= po.FirstOffset {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: s.Brokers(), Topic: topic, Partition: po.Partition, MaxWait: 100 * time.Millisecond})
		if err := r.SetOffset(po.FirstOffset); err != nil {
			t.Fatal(err)
		}
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatalf("read %s/%d: %v", topic, po.Partition, err)
			}
			out = append(out, m)
			if m.Offset+1 >= po.LastOffset {
				break
			}
		}
		_ = r.Close()
	}
	return out
}

// idsOf decodes events and returns their ids, checking each record's key is its
// customer.
func idsOf(t *testing.T, msgs []kafka.Message) map[string]int {
	t.Helper()
	ids := map[string]int{}
	for _, m := range msgs {
		e, err := event.Decode(m.Value)
		if err != nil {
			t.Fatalf("event at %d@%d: %v", m.Partition, m.Offset, err)
		}
		if string(m.Key) != e.Customer {
			t.Fatalf("event %s: key %q, customer %q; want the key to be the customer", e.ID, m.Key, e.Customer)
		}
		ids[e.ID]++
	}
	return ids
}

func TestServiceEnforcesThrottlesAndWritesEvents(t *testing.T) {
	s := throttletest.Start(t, throttletest.Options{})
	s.CreateTopic(t, throttleTopic, 3)
	pub := publisher(t, s)
	setThrottle(t, pub, "th-1", "acme", 5, time.Minute)

	cfg := testConfig(t, s, "replica-a")
	svc := startService(t, cfg)
	svc.waitReady(t)

	first := time.Now()
	for i := range 5 {
		r := svc.post(t, fmt.Sprintf(`{"customer":"acme","id":"acme-%d","payload":{"i":%d}}`, i, i))
		if r.status != http.StatusAccepted {
			t.Fatalf("acme event %d: %d %s, want 202", i, r.status, r.body)
		}
	}
	r := svc.post(t, `{"customer":"acme","id":"acme-over"}`)
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("acme over its limit: %d, want 429", r.status)
	}
	// One event per 12s: the next is allowed 12s after the first was admitted, so less
	// the time the five took (the first write can wait for the events topic to exist).
	elapsed := int(time.Since(first).Seconds() + 1)
	retry, err := strconv.Atoi(r.header.Get("Retry-After"))
	if err != nil || retry > 12 || retry < max(12-elapsed, 1) || r.header.Get("RateLimit-Policy") != `"default";q=5;w=60` {
		t.Fatalf("429 headers: Retry-After %q RateLimit-Policy %q, want %d to 12 and q=5;w=60",
			r.header.Get("Retry-After"), r.header.Get("RateLimit-Policy"), max(12-elapsed, 1))
	}
	if r := svc.post(t, `[{"customer":"other","id":"other-0"},{"customer":"other","id":"other-1"}]`); r.status != http.StatusAccepted {
		t.Fatalf("unthrottled customer: %d, want 202", r.status)
	}

	// The events landed on the events topic, keyed by customer; the refused one did not.
	ids := idsOf(t, readEvents(t, s, cfg.EventsTopic))
	for _, id := range []string{"acme-0", "acme-1", "acme-2", "acme-3", "acme-4", "other-0", "other-1"} {
		if ids[id] != 1 {
			t.Errorf("event %s on the topic %d times, want 1", id, ids[id])
		}
	}
	if ids["acme-over"] != 0 {
		t.Error("the refused event is on the topic")
	}

	// The view shows the throttle and the table's freshness.
	view := svc.do(t, http.MethodGet, "/v1/throttles/acme", "")
	var v struct {
		Ready, Fresh bool
		Partitions   []json.RawMessage
		Throttle     struct{ ID string }
	}
	if err := json.Unmarshal([]byte(view.body), &v); err != nil || view.status != 200 {
		t.Fatalf("view: %d %s", view.status, view.body)
	}
	if !v.Ready || !v.Fresh || len(v.Partitions) != 3 || v.Throttle.ID != "th-1" {
		t.Fatalf("view %s: want ready, fresh, 3 partitions, throttle th-1", view.body)
	}

	// Lifting the throttle lets acme in again, within a moment.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := pub.Lift(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "acme accepted after the lift", func() bool {
		return svc.post(t, `{"customer":"acme"}`).status == http.StatusAccepted
	})

	// A new throttle applies with a fresh quota.
	setThrottle(t, pub, "th-2", "acme", 1, time.Minute)
	eventually(t, 5*time.Second, "acme throttled again", func() bool {
		return svc.post(t, `{"customer":"acme"}`).status == http.StatusTooManyRequests
	})

	eventually(t, 5*time.Second, "fleet size known", func() bool {
		return strings.Contains(svc.do(t, http.MethodGet, "/metrics", "").body, "sluice_ingestion_fleet_size 1")
	})
	metrics := svc.do(t, http.MethodGet, "/metrics", "").body
	for _, want := range []string{
		`sluice_ingestion_decisions_total{result="rejected"}`,
		`sluice_ingestion_active_throttles 1`,
		`sluice_ingestion_table_ready 1`,
		`sluice_ingestion_throttle_propagation_seconds_count`,
		`sluice_ingestion_poison_records_total{reason="bad_magic"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// Each request writes its own events, and kafka.Writer gathers concurrent requests into
// one produce request per partition: many concurrent requests must cost few produce
// requests, and none of them may wait for another's batch to be written first.
func TestConcurrentRequestsShareProduceRequests(t *testing.T) {
	throttletest.RequireKfake(t, "counts produce requests with a kfake request hook (Cluster().ControlKey)")
	s := throttletest.Start(t, throttletest.Options{})
	s.CreateTopic(t, throttleTopic, 3)
	cfg := testConfig(t, s, "replica-a")
	cfg.BatchTimeout = 20 * time.Millisecond // requests arriving meanwhile share a batch
	svc := startService(t, cfg)
	svc.waitReady(t)
	if r := svc.post(t, `{"customer":"warm-up"}`); r.status != http.StatusAccepted {
		t.Fatalf("first event: %d %s", r.status, r.body)
	}

	var produces atomic.Int64 // produce requests carrying events
	s.Cluster().ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		s.Cluster().KeepControl()
		for _, tp := range req.(*kmsg.ProduceRequest).Topics {
			if tp.Topic == cfg.EventsTopic {
				produces.Add(1)
				break
			}
		}
		return nil, nil, false // the broker handles it as usual
	})
	const requests = 200
	var wg sync.WaitGroup
	for i := range requests {
		wg.Go(func() {
			body := fmt.Sprintf(`{"customer":"c%d","id":"e%d"}`, i%10, i)
			resp, err := http.Post(svc.url+"/v1/events", "application/json", strings.NewReader(body))
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				t.Errorf("request %d: status %d, want 202", i, resp.StatusCode)
			}
		})
	}
	wg.Wait()
	n := produces.Load()
	t.Logf("%d concurrent requests written in %d produce requests", requests, n)
	if n == 0 || n > requests/4 {
		t.Fatalf("%d produce requests for %d concurrent requests, want between 1 and %d", n, requests, requests/4)
	}
	if got := len(idsOf(t, readEvents(t, s, cfg.EventsTopic))); got != requests+1 {
		t.Fatalf("%d distinct events on the topic, want %d", got, requests+1)
	}
}

func TestServiceNotReadyUntilTableCaughtUp(t *testing.T) {
	s := throttletest.Start(t, throttletest.Options{})
	// No throttle topic yet: the processing service creates it. Ingestion waits.
	svc := startService(t, testConfig(t, s, "replica-a"))
	time.Sleep(500 * time.Millisecond)
	for range 3 {
		r := svc.post(t, `{"customer":"acme"}`)
		if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
			t.Fatalf("before the table caught up: %d Retry-After %q, want 503 with Retry-After", r.status, r.header.Get("Retry-After"))
		}
	}
	if r := svc.do(t, http.MethodGet, "/readyz", ""); r.status != http.StatusServiceUnavailable {
		t.Fatalf("readyz before the table caught up: %d, want 503", r.status)
	}
	s.CreateTopic(t, throttleTopic, 3)
	svc.waitReady(t)
	if r := svc.post(t, `{"customer":"acme"}`); r.status != http.StatusAccepted {
		t.Fatalf("once ready: %d, want 202", r.status)
	}
}

func TestServiceSharesLimitAcrossReplicas(t *testing.T) {
	s := throttletest.Start(t, throttletest.Options{})
	s.CreateTopic(t, throttleTopic, 3)
	setThrottle(t, publisher(t, s), "th-1", "acme", 20, time.Minute)

	policy := func(svc *service) string {
		return svc.post(t, `{"customer":"acme"}`).header.Get("RateLimit-Policy")
	}
	a := startService(t, testConfig(t, s, "replica-a"))
	a.waitReady(t)
	eventually(t, 5*time.Second, "a alone enforces 20", func() bool { return policy(a) == `"default";q=20;w=60` })

	b := startService(t, testConfig(t, s, "replica-b"))
	b.waitReady(t)
	eventually(t, 5*time.Second, "a and b enforce 10 each", func() bool {
		return policy(a) == `"default";q=10;w=60` && policy(b) == `"default";q=10;w=60`
	})

	b.stop(t) // clean stop: tombstone
	eventually(t, 5*time.Second, "a alone again enforces 20", func() bool { return policy(a) == `"default";q=20;w=60` })
}

func TestServiceKeepsEnforcingAndLosesNothingWhileBrokerIsDown(t *testing.T) {
	s := throttletest.Start(t, throttletest.Options{DataDir: t.TempDir()})
	s.CreateTopic(t, throttleTopic, 3)
	setThrottle(t, publisher(t, s), "th-1", "acme", 2, time.Minute)

	cfg := testConfig(t, s, "replica-a")
	cfg.BufferEvents = 5
	cfg.WriteTimeout = time.Minute
	svc := startService(t, cfg)
	svc.waitReady(t)
	for i := range 2 {
		if r := svc.post(t, fmt.Sprintf(`{"customer":"acme","id":"acme-%d"}`, i)); r.status != http.StatusAccepted {
			t.Fatalf("acme %d: %d, want 202", i, r.status)
		}
	}
	// Ensure the events topic is created and written before the outage.
	if r := svc.post(t, `{"customer":"other","id":"before"}`); r.status != http.StatusAccepted {
		t.Fatalf("before the outage: %d, want 202", r.status)
	}

	s.StopBroker()

	// Enforcement goes on from the last known throttles.
	if r := svc.post(t, `{"customer":"acme","id":"acme-over"}`); r.status != http.StatusTooManyRequests {
		t.Fatalf("acme over its limit with the broker down: %d, want 429", r.status)
	}
	if r := svc.do(t, http.MethodGet, "/readyz", ""); r.status != http.StatusOK {
		t.Fatalf("readyz with the broker down after ready: %d, want 200 (fail-static)", r.status)
	}

	// Five events fill the buffer; their requests wait for the broker.
	held := make(chan reply, 5)
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Go(func() { held <- svc.post(t, fmt.Sprintf(`{"customer":"other","id":"held-%d"}`, i)) })
	}
	eventually(t, 10*time.Second, "buffer full", func() bool {
		return strings.Contains(svc.do(t, http.MethodGet, "/metrics", "").body, "sluice_ingestion_buffered_events 5")
	})
	// The next is refused, not dropped.
	r := svc.post(t, `{"customer":"other","id":"refused"}`)
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("buffer full: %d Retry-After %q, want 503 with Retry-After", r.status, r.header.Get("Retry-After"))
	}

	if err := s.StartBroker(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(held)
	for r := range held {
		if r.status != http.StatusAccepted {
			t.Fatalf("held request after the broker came back: %d %s, want 202", r.status, r.body)
		}
	}

	ids := idsOf(t, readEvents(t, s, cfg.EventsTopic))
	for _, id := range []string{"acme-0", "acme-1", "before", "held-0", "held-1", "held-2", "held-3", "held-4"} {
		if ids[id] < 1 {
			t.Errorf("accepted event %s is not on the topic", id)
		}
	}
	for _, id := range []string{"acme-over", "refused"} {
		if ids[id] != 0 {
			t.Errorf("refused event %s is on the topic", id)
		}
	}
}

func TestHealthcheck(t *testing.T) {
	ok := httptestServer(t, http.StatusOK)
	if code := healthcheck(ok, time.Second, io.Discard); code != 0 {
		t.Fatalf("healthy server: exit %d, want 0", code)
	}
	bad := httptestServer(t, http.StatusServiceUnavailable)
	if code := healthcheck(bad, time.Second, io.Discard); code != 1 {
		t.Fatalf("unhealthy server: exit %d, want 1", code)
	}
	if code := healthcheck("127.0.0.1:1", time.Second, io.Discard); code != 1 {
		t.Fatalf("nothing listening: exit %d, want 1", code)
	}
}

// httptestServer serves /healthz with status on a wildcard address, returned as a
// listen address (":port") the way HTTP_ADDR spells it.
func httptestServer(t *testing.T, status int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.WriteHeader(status)
	}), ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return ":" + port
}

// TestServiceReportsTheMirrorsLag: with MIRROR_HEARTBEAT_TOPIC set, a replica reports the
// age of the newest heartbeat of each region it reads there, and the age grows while no
// new heartbeat arrives (the mirror, or the first region, is away).
func TestServiceReportsTheMirrorsLag(t *testing.T) {
	s := throttletest.Start(t, throttletest.Options{})
	s.CreateTopic(t, throttleTopic, 3)
	const topic = "sluice.mirror.heartbeat"
	s.CreateTopic(t, topic, 1)
	cfg := testConfig(t, s, "mirror-1")
	cfg.MirrorHeartbeatTopic = topic
	svc := startService(t, cfg)
	svc.waitReady(t)
	beat := time.Now().Add(-2 * time.Second) // a heartbeat the mirror copied 2s late
	s.MustProduce(t, topic, kafka.Message{Key: []byte("region-a"), Value: mirror.Encode(beat)})
	age := func() float64 {
		for line := range strings.Lines(svc.do(t, http.MethodGet, "/metrics", "").body) {
			if v, ok := strings.CutPrefix(line, `sluice_ingestion_mirror_heartbeat_age_seconds{region="region-a"} `); ok {
				f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
				if err != nil {
					t.Fatal(err)
				}
				return f
			}
		}
		return -1
	}
	eventually(t, 10*time.Second, "the heartbeat's age in /metrics", func() bool { return age() >= 0 })
	first := age()
	if first < 2 || first > 10 {
		t.Fatalf("age %.3fs, want about 2s", first)
	}
	time.Sleep(500 * time.Millisecond)
	if later := age(); later < first+0.4 {
		t.Fatalf("age went from %.3fs to %.3fs in 500ms without a heartbeat, want it to grow", first, later)
	}
}

// TestAuditCountsWhatWasWritten: the audit counts of two incarnations of one replica (a
// restart in between) add up, per partition and bucket, to exactly the events on the
// events topic: each event counted once, on the partition it was written to.
func TestAuditCountsWhatWasWritten(t *testing.T) {
	s := throttletest.Start(t, throttletest.Options{})
	s.CreateTopic(t, throttleTopic, 3)
	cfg := testConfig(t, s, "replica-a")
	cfg.AuditTopic = "audit.ingestion"
	cfg.AuditInterval = 50 * time.Millisecond
	cfg.AuditBucket = 200 * time.Millisecond // several buckets in one test
	sent := 0
	for run := range 2 {
		svc := startService(t, cfg)
		svc.waitReady(t)
		for i := range 60 {
			var b strings.Builder
			b.WriteByte('[')
			for j := range 1 + i%3 {
				if j > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, `{"customer":"c-%d","id":"r%d-%d-%d"}`, i%17, run, i, j)
				sent++
			}
			b.WriteByte(']')
			if r := svc.post(t, b.String()); r.status != http.StatusAccepted {
				t.Fatalf("post: %d %s", r.status, r.body)
			}
			time.Sleep(5 * time.Millisecond)
		}
		svc.stop(t) // a clean stop publishes the last counts
	}

	onTopic := map[[2]int64]int64{} // partition, bucket → events
	width := cfg.AuditBucket.Milliseconds()
	events := readEvents(t, s, cfg.EventsTopic)
	for _, m := range events {
		ms := m.Time.UnixMilli()
		onTopic[[2]int64{int64(m.Partition), ms - ms%width}]++
	}
	book := audit.NewBook(nil, 0)
	kc, _ := cfg.Kafka("test")
	if _, err := follow.Scan(t.Context(), kc, cfg.AuditTopic, func(m kafka.Message) error { return book.Apply(t.Context(), m) }); err != nil {
		t.Fatal(err)
	}
	counted := map[[2]int64]int64{}
	var total int64
	for _, r := range book.Reconcile(time.Now().Add(time.Hour), 0) {
		counted[[2]int64{int64(r.Partition), r.Bucket.UnixMilli()}] = r.Accepted
		total += r.Accepted
		if len(r.Unpublished) > 0 {
			t.Errorf("bucket %v partition %d names %v as stopped unclean; both stopped cleanly", r.Bucket, r.Partition, r.Unpublished)
		}
	}
	if len(events) != sent || total != int64(sent) || !maps.Equal(counted, onTopic) {
		t.Fatalf("%d events sent, %d on the topic, %d counted; per partition and bucket counted %v, on the topic %v",
			sent, len(events), total, counted, onTopic)
	}
	if book.Skipped() != 0 || len(onTopic) < 6 {
		t.Fatalf("%d audit records skipped, %d cells: want none skipped and events spread over partitions and buckets", book.Skipped(), len(onTopic))
	}
	t.Logf("%d events in %d partition-buckets, counted exactly by two incarnations", sent, len(onTopic))
}
