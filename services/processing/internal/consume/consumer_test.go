package consume_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/services/platform/event"
	"github.com/sluice-dev/sluice/services/processing/internal/autothrottle"
	"github.com/sluice-dev/sluice/services/processing/internal/consume"
	"github.com/sluice-dev/sluice/services/processing/internal/detect"
	"github.com/sluice-dev/sluice/services/processing/internal/metrics"
	"github.com/sluice-dev/sluice/services/processing/internal/throttlefake"
)

// A flood from one customer among many, through the real consumer on the in-process
// broker: exactly that customer is throttled, with the configured limit and duration.
func TestConsumerThrottlesTheFlooderOnly(t *testing.T) {
	const partitions = 3
	c := newCluster(t, partitions)
	// Ingested over the last minute: processing starts behind, with a backlog.
	from := time.Now().Add(-time.Minute)
	var msgs []kafka.Message
	others := customers("other", 20)
	for i := range 600 {
		at := from.Add(time.Duration(i) * 90 * time.Millisecond)
		msgs = append(msgs, eventMsg(t, "acme", at))
		if i%3 == 0 && i/3 < 200 {
			msgs = append(msgs, eventMsg(t, others[(i/3)%len(others)], at))
		}
	}
	c.produce(t, msgs...)

	store := throttlefake.New(time.Now)
	m := metrics.Discard()
	ctrl, err := autothrottle.New(autothrottle.Config{
		Detect: detect.Config{
			Window: time.Minute, AgeThreshold: 30 * time.Second, AgeMinEvents: 20, AgeMinShare: 0.25,
			ShareThreshold: 0.5, MinEvents: 100,
		},
		Limit: 20, Window: time.Minute, Duration: 10 * time.Minute, RenewMargin: 2 * time.Minute,
		Mode: throttle.ModeEnforce, InstanceID: "processing-test",
	}, store, store, autothrottle.WithMetrics(m))
	if err != nil {
		t.Fatal(err)
	}
	processed, err := cluster.NewWriter(c.kc, processedTopic)
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.CloseWriter(processed)
	r := c.start(t, consume.NewForwarder(processed), consume.Config{CommitInterval: 100 * time.Millisecond},
		consume.WithObserver(ctrl), consume.WithMetrics(m))
	c.waitCommitted(t, partitions, int64(len(msgs)))
	if err := r.stop(t); err != nil {
		t.Fatalf("run: %v", err)
	}

	if got := testutil.ToFloat64(m.Events.WithLabelValues("handled")); got != float64(len(msgs)) {
		t.Errorf("events handled: got %g, want %d", got, len(msgs))
	}
	sets := store.Sets()
	if len(sets) != 1 {
		t.Fatalf("got %d throttles (%+v), want exactly 1", len(sets), sets)
	}
	got := sets[0]
	if got.Customer != "acme" || got.Limit != 20 || got.Window != time.Minute ||
		got.ExpiresAt.Sub(got.CreatedAt) != 10*time.Minute || got.Reason.Metric != detect.MetricShare {
		t.Errorf("got throttle %+v, want acme limited to 20/1m for 10m by traffic share", got)
	}
	if got := len(c.readAll(t, processedTopic, len(msgs))); got != len(msgs) {
		t.Errorf("processed topic: got %d records, want %d", got, len(msgs))
	}
}

// Poison events go to the dead-letter topic with headers saying why, where from and
// when, and the events after them are processed: the consumer does not stall.
func TestPoisonEventsAreDeadLettered(t *testing.T) {
	c := newCluster(t, 1)
	now := time.Now().UTC()
	good := func(customer string) kafka.Message { return eventMsg(t, customer, now) }
	withHeader := kafka.Message{Key: []byte("x"), Value: []byte("not json {"), Headers: []kafka.Header{{Key: "trace-id", Value: []byte("t-1")}}}
	c.produce(t,
		good("alice"), // 0
		withHeader,    // 1
		kafka.Message{Key: []byte("bad"), Value: []byte(`{"customer":"bad\u0001","ingested_at":"2026-01-01T00:00:00Z"}`)}, // 2
		kafka.Message{Key: []byte("bob"), Value: []byte(`{"customer":"bob"}`)},                                            // 3
		good("doomed"), // 4
		good("carol"),  // 5
		good("flaky"),  // 6
	)

	processed, err := cluster.NewWriter(c.kc, processedTopic)
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.CloseWriter(processed)
	fwd := consume.NewForwarder(processed)
	var mu sync.Mutex
	flakyFailures := 2
	h := consume.PerEvent(func(ctx context.Context, ev event.Event, msg kafka.Message) error {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case ev.Customer == "doomed":
			return errors.New("downstream refused doomed")
		case ev.Customer == "flaky" && flakyFailures > 0:
			flakyFailures--
			return errors.New("downstream hiccup")
		}
		return fwd.Handle(ctx, []consume.Item{{Event: ev, Msg: msg}})
	})
	m := metrics.Discard()
	start := time.Now().UTC().Add(-time.Second)
	r := c.start(t, h, consume.Config{Retries: 2, Backoff: time.Millisecond, CommitInterval: 50 * time.Millisecond, InstanceID: "proc-7"},
		consume.WithMetrics(m))
	c.waitCommitted(t, 1, 7)
	if err := r.stop(t); err != nil {
		t.Fatalf("run: %v", err)
	}

	tests := []struct {
		offset        int64
		stage         string
		errorContains string
		attempts      string
		value         string
	}{
		{1, consume.StageDecode, "malformed", "0", "not json {"},
		{2, consume.StageDecode, "control character", "0", ""},
		{3, consume.StageDecode, "ingested_at missing", "0", ""},
		{4, consume.StageHandler, "downstream refused doomed", "3", ""},
	}
	dead := c.readAll(t, dlqTopic, len(tests))
	for i, tt := range tests {
		t.Run("offset "+strconv.FormatInt(tt.offset, 10), func(t *testing.T) {
			d := dead[i]
			want := map[string]string{
				consume.HeaderStage: tt.stage, consume.HeaderTopic: eventsTopic, consume.HeaderPartition: "0",
				consume.HeaderOffset: strconv.FormatInt(tt.offset, 10), consume.HeaderAttempts: tt.attempts,
				consume.HeaderInstance: "proc-7",
			}
			for k, w := range want {
				if got, ok := header(d, k); !ok || got != w {
					t.Errorf("header %s: got %q (present %v), want %q", k, got, ok, w)
				}
			}
			if got, _ := header(d, consume.HeaderError); !strings.Contains(got, tt.errorContains) {
				t.Errorf("header %s: got %q, want it to contain %q", consume.HeaderError, got, tt.errorContains)
			}
			ts, _ := header(d, consume.HeaderTime)
			when, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil || when.Before(start) || when.After(time.Now().Add(time.Second)) {
				t.Errorf("header %s: got %q (%v), want a time since %s", consume.HeaderTime, ts, err, start)
			}
			if tt.value != "" && string(d.Value) != tt.value {
				t.Errorf("value: got %q, want the original %q", d.Value, tt.value)
			}
		})
	}
	if got, _ := header(dead[0], "trace-id"); got != "t-1" {
		t.Errorf("original header trace-id: got %q, want kept as t-1", got)
	}

	// The good events after the poison ones were forwarded, in order.
	var got []string
	for _, m := range c.readAll(t, processedTopic, 3) {
		got = append(got, string(m.Key))
	}
	if want := "alice,carol,flaky"; strings.Join(got, ",") != want {
		t.Errorf("processed: got %v, want %s", got, want)
	}
	for _, tt := range []struct {
		stage string
		want  float64
	}{{consume.StageDecode, 3}, {consume.StageHandler, 1}} {
		if got := testutil.ToFloat64(m.DeadLettered.WithLabelValues(tt.stage)); got != tt.want {
			t.Errorf("dead-lettered %s: got %g, want %g", tt.stage, got, tt.want)
		}
	}
}

// recorder is a handler that remembers which records it handled, slowly enough that a
// shutdown lands in the middle of the work.
type recorder struct {
	mu      sync.Mutex
	handled map[[2]int64]int // (partition, offset) → times handled
	n       int
}

func (r *recorder) Handle(_ context.Context, items []consume.Item) error {
	for _, it := range items {
		r.handle(it.Msg)
	}
	return nil
}

func (r *recorder) handle(msg kafka.Message) {
	time.Sleep(time.Millisecond)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.handled[[2]int64{int64(msg.Partition), msg.Offset}]++
	r.n++
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

func (r *recorder) snapshot() map[[2]int64]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[[2]int64]int, len(r.handled))
	for k, v := range r.handled {
		out[k] = v
	}
	return out
}

// Shutdown under load loses no committed work: an offset is committed only once its
// event was handled, a clean shutdown commits everything handled, and a restarted
// consumer carries on from there, so every event is handled exactly once across the
// restart.
func TestShutdownUnderLoadLosesNoCommittedWork(t *testing.T) {
	const partitions, total = 3, 900
	c := newCluster(t, partitions)
	var msgs []kafka.Message
	names := customers("c", 30)
	for i := range total {
		msgs = append(msgs, eventMsg(t, names[i%len(names)], time.Now()))
	}
	c.produce(t, msgs...)
	// Small batches: the shutdown lands between two of them.
	cfg := consume.Config{CommitInterval: 20 * time.Millisecond, BatchSize: 10}

	first := &recorder{handled: map[[2]int64]int{}}
	r1 := c.start(t, first, cfg)
	deadline := time.Now().Add(30 * time.Second)
	for first.count() < total/3 {
		if time.Now().After(deadline) {
			t.Fatalf("handled %d events in 30s, want %d", first.count(), total/3)
		}
		time.Sleep(time.Millisecond)
	}
	if err := r1.stop(t); err != nil {
		t.Fatalf("first run: %v", err)
	}
	handled1 := first.snapshot()
	if len(handled1) >= total {
		t.Fatalf("the first consumer handled all %d events before shutdown: the test did not interrupt it", total)
	}
	committed := c.committed(t, partitions)

	// Committed means handled, and a clean shutdown leaves nothing handled uncommitted.
	for p := range int64(partitions) {
		for off := range committed[int(p)] {
			if handled1[[2]int64{p, off}] != 1 {
				t.Errorf("partition %d offset %d: committed but handled %d times before, want 1", p, off, handled1[[2]int64{p, off}])
			}
		}
	}
	for k := range handled1 {
		if k[1] >= committed[int(k[0])] {
			t.Errorf("partition %d offset %d: handled but not committed at shutdown (committed %d)", k[0], k[1], committed[int(k[0])])
		}
	}

	second := &recorder{handled: map[[2]int64]int{}}
	r2 := c.start(t, second, cfg)
	c.waitCommitted(t, partitions, total)
	if err := r2.stop(t); err != nil {
		t.Fatalf("second run: %v", err)
	}
	handled2 := second.snapshot()
	for k := range handled2 {
		if k[1] < committed[int(k[0])] {
			t.Errorf("partition %d offset %d: handled again after restart, want it left alone (committed %d)", k[0], k[1], committed[int(k[0])])
		}
	}
	if got := len(handled1) + len(handled2); got != total {
		t.Errorf("got %d distinct events handled across the restart, want %d", got, total)
	}
}

// An event whose handling is cut short by shutdown (its handler failed and it waits for
// a retry) is not committed: the restarted consumer handles it.
func TestEventInterruptedByShutdownIsNotCommitted(t *testing.T) {
	c := newCluster(t, 1)
	var msgs []kafka.Message
	for i := range 10 {
		msgs = append(msgs, eventMsg(t, "c-"+strconv.Itoa(i), time.Now()))
	}
	c.produce(t, msgs...)

	const stuck = 5
	reached := make(chan struct{})
	var once sync.Once
	first := &recorder{handled: map[[2]int64]int{}}
	h := consume.PerEvent(func(ctx context.Context, ev event.Event, msg kafka.Message) error {
		if msg.Offset == stuck {
			once.Do(func() { close(reached) })
			return errors.New("downstream unavailable")
		}
		first.handle(msg)
		return nil
	})
	// A long backoff: shutdown lands while the event waits for its retry.
	r1 := c.start(t, h, consume.Config{Retries: 5, Backoff: time.Minute, CommitInterval: 10 * time.Millisecond})
	select {
	case <-reached:
	case <-time.After(30 * time.Second):
		t.Fatal("the consumer never reached the failing event")
	}
	began := time.Now()
	if err := r1.stop(t); err != nil {
		t.Fatalf("first run: %v", err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("shutdown took %s, want it not to wait out the retry backoff", took)
	}
	if got := c.committed(t, 1)[0]; got != stuck {
		t.Fatalf("committed offset: got %d, want %d (the interrupted event is not committed)", got, stuck)
	}

	second := &recorder{handled: map[[2]int64]int{}}
	r2 := c.start(t, second, consume.Config{CommitInterval: 10 * time.Millisecond})
	c.waitCommitted(t, 1, int64(len(msgs)))
	if err := r2.stop(t); err != nil {
		t.Fatalf("second run: %v", err)
	}
	got := second.snapshot()
	for off := range int64(len(msgs)) {
		want := 0
		if off >= stuck {
			want = 1
		}
		if got[[2]int64{0, off}] != want {
			t.Errorf("offset %d: handled %d times after restart, want %d", off, got[[2]int64{0, off}], want)
		}
	}
}
