package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/pkg/throttle/follow"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
	"github.com/sluice-dev/sluice/services/platform/event"
	"github.com/sluice-dev/sluice/services/platform/mirror"
	"github.com/sluice-dev/sluice/services/processing/internal/config"
	"github.com/sluice-dev/sluice/services/processing/internal/throttlefake"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// The whole service on the in-process broker, with an in-memory throttle store in the
// seam: it creates its topics, becomes ready, throttles a flooding customer, serves the
// admin API, and on SIGTERM stops with every handled event committed.
func TestServiceEndToEnd(t *testing.T) {
	stack := throttletest.Start(t, throttletest.Options{})
	addr := freeAddr(t)
	for k, v := range map[string]string{
		"KAFKA_BROKERS": strings.Join(stack.Brokers(), ","), "SCHEMA_REGISTRY_URL": stack.RegistryURL(),
		"ADMIN_ADDR": addr, "ADMIN_TOKEN": "tok", "INSTANCE_ID": "proc-e2e",
		"COMMIT_INTERVAL": "50ms", "EVENTS_TOPIC_PARTITIONS": "3", "SHUTDOWN_TIMEOUT": "20s",
		"MIRROR_HEARTBEAT_TOPIC": "sluice.mirror.heartbeat", "REGION": "test-region",
	} {
		t.Setenv(k, v)
	}
	cfg, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}

	store := throttlefake.New(time.Now)
	fakeStore := func(cluster.Config, config.Config, *throttle.Codec, *zap.Logger) (*throttleTopic, error) {
		return &throttleTopic{
			publisher: store, table: store,
			runners: map[string]func(context.Context) error{"fake table": func(ctx context.Context) error {
				<-ctx.Done()
				return nil
			}},
		}, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- runWith(ctx, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), cfg, fakeStore) }()

	base := "http://" + addr
	get := func(path string) (int, string) {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitFor := func(what string, cond func() bool) { t.Helper(); waitService(t, done, what, cond) }
	waitFor("readyz", func() bool { code, _ := get("/readyz"); return code == http.StatusOK })

	// It writes the mirror heartbeats of its region.
	ages := mirror.NewAges(zap.NewNop())
	waitFor("a mirror heartbeat of test-region", func() bool {
		_, err := follow.Scan(ctx, cluster.Config{Brokers: stack.Brokers()}, "sluice.mirror.heartbeat", func(m kafka.Message) error { return ages.Apply(ctx, m) })
		age, ok := ages.Age(time.Now())["test-region"]
		return err == nil && ok && age < 5*time.Second
	})

	// One customer floods among twenty.
	msgs := flood(t, ctx, stack, cfg.EventsTopic)
	waitFor("acme's throttle", func() bool { return len(store.SetsFor("acme")) == 1 })

	if code, body := get("/v1/throttles/acme"); code != http.StatusOK || !strings.Contains(body, `"metric":"traffic_share"`) {
		t.Errorf("GET acme: got %d %s, want 200 with the automatic throttle", code, body)
	}
	code, body := get("/metrics")
	if code != http.StatusOK || !strings.Contains(body, `sluice_processing_throttles_total{action="set",reason="traffic_share"} 1`) {
		t.Errorf("metrics: got %d, want the automatic throttle counted", code)
	}
	waitFor("every event handled", func() bool {
		_, body := get("/metrics")
		return strings.Contains(body, `sluice_processing_events_total{outcome="handled"} 400`)
	})

	cancel() // SIGTERM
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("service did not stop within 30s")
	}
	if got := store.Sets(); len(got) != 1 {
		t.Errorf("got %d throttles, want exactly acme's: %+v", len(got), got)
	}

	// Everything handled was committed before the service stopped.
	cl := &kafka.Client{Addr: kafka.TCP(stack.Brokers()...), Timeout: 5 * time.Second}
	resp, err := cl.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{
		GroupID: cfg.ConsumerGroup, Topics: map[string][]int{cfg.EventsTopic: {0, 1, 2}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var committed int64
	for _, p := range resp.Topics[cfg.EventsTopic] {
		committed += max(p.CommittedOffset, 0)
	}
	if committed != int64(len(msgs)) {
		t.Errorf("committed: got %d, want %d", committed, len(msgs))
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Errorf("admin server still listening after shutdown")
	}
}

// waitService polls cond until it holds, failing the test after 3 minutes or when the
// service run by runWith (its result on done) stops first.
func waitService(t *testing.T, done <-chan error, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for !cond() {
		select {
		case err := <-done:
			t.Fatalf("service stopped while waiting for %s: %v", what, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// flood writes 400 events to topic, three quarters of them from acme and the rest spread
// over twenty other customers, and returns them.
func flood(t *testing.T, ctx context.Context, stack *throttletest.Stack, topic string) []kafka.Message {
	t.Helper()
	var msgs []kafka.Message
	now := time.Now()
	for i := range 400 {
		c := "acme"
		if i%4 == 0 {
			c = fmt.Sprintf("other-%02d", (i/4)%20)
		}
		b, _ := event.Encode(&event.Event{Customer: c, IngestedAt: now})
		msgs = append(msgs, kafka.Message{Key: []byte(c), Value: b})
	}
	w, err := cluster.NewWriter(stack.Kafka(), topic)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cluster.CloseWriter(w) }()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	return msgs
}
