package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/pkg/throttle/follow"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
	"github.com/sluice-dev/sluice/services/platform/audit"
	"github.com/sluice-dev/sluice/services/platform/event"
	"github.com/sluice-dev/sluice/services/processing/internal/config"
)

// recordPartitions stands in for ingestion's sink: it notes in each message the
// partition the writer put it on.
type recordPartitions struct{ kafka.Balancer }

func (r recordPartitions) Balance(msg kafka.Message, partitions ...int) int {
	p := r.Balancer.Balance(msg, partitions...)
	msg.WriterData.(*kafka.Message).Partition = p
	return p
}

// testIngestion writes events as ingestion does, and counts them on an ingestion tally.
type testIngestion struct {
	w     *kafka.Writer
	tally *audit.Tally
	n     int
}

func newTestIngestion(t *testing.T, kc cluster.Config, events, auditTopic string, width time.Duration) *testIngestion {
	w, err := cluster.NewWriter(kc, events, cluster.WithBalancer(func(b kafka.Balancer) kafka.Balancer { return recordPartitions{b} }))
	if err != nil {
		t.Fatal(err)
	}
	aw, err := audit.NewWriter(kc, auditTopic)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.CloseWriter(w); _ = cluster.CloseWriter(aw) })
	tally, err := audit.New(audit.Ingestion, audit.Incarnation("test-ingestion"), aw, audit.WithWidth(width))
	if err != nil {
		t.Fatal(err)
	}
	return &testIngestion{w: w, tally: tally}
}

// accept writes n events of nine customers and counts them once acknowledged; it returns
// the messages, with their partitions.
func (in *testIngestion) accept(t *testing.T, n int) []kafka.Message {
	t.Helper()
	now := time.Now()
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		c := "c-" + strconv.Itoa(in.n%9)
		b, _ := event.Encode(&event.Event{ID: fmt.Sprintf("e-%d", in.n), Customer: c, IngestedAt: now})
		msgs[i] = kafka.Message{Key: []byte(c), Value: b, Time: now}
		msgs[i].WriterData = &msgs[i]
		in.n++
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for {
		err := in.w.WriteMessages(ctx, msgs...)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond) // a broker coming back
	}
	in.tally.Accepted(msgs)
	// Retried as a replica's publishing is: after a restart of every broker, the audit
	// topic's leader may be elected after the events topic's.
	for {
		err := in.tally.Flush(ctx, false)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return msgs
}

// franzClient is a client for the requests kafka-go does not make.
func franzClient(t *testing.T, brokers []string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// deleteRecords moves partition p's log start to offset, as an operator's DeleteRecords.
func deleteRecords(t *testing.T, brokers []string, topic string, p int32, offset int64) {
	t.Helper()
	req := kmsg.NewPtrDeleteRecordsRequest()
	rt := kmsg.NewDeleteRecordsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewDeleteRecordsRequestTopicPartition()
	rp.Partition, rp.Offset = p, offset
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 10000
	resp, err := req.RequestWith(t.Context(), franzClient(t, brokers))
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range resp.Topics {
		for _, pp := range tp.Partitions {
			if pp.ErrorCode != 0 || pp.LowWatermark != offset {
				t.Fatalf("delete records of %s/%d below %d: error %d, log start %d", topic, pp.Partition, offset, pp.ErrorCode, pp.LowWatermark)
			}
		}
	}
}

// logStart is partition p's log start offset.
func logStart(t *testing.T, brokers []string, topic string, p int32) int64 {
	t.Helper()
	req := kmsg.NewPtrListOffsetsRequest()
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewListOffsetsRequestTopicPartition()
	rp.Partition, rp.Timestamp = p, -2 // earliest
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(t.Context(), franzClient(t, brokers))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 || resp.Topics[0].Partitions[0].ErrorCode != 0 {
		t.Fatalf("list the log start of %s/%d: %+v", topic, p, resp.Topics)
	}
	return resp.Topics[0].Partitions[0].Offset
}

// TestAuditFindsDeletedEventsAndNothingElse: events are accepted, and some of one
// partition are deleted (DeleteRecords) before processing reads them. Then the broker
// and the registry go away and come back while processing runs and more events are
// accepted. The audit, in processing's metrics and in the audit topic, reports exactly
// the deleted events missing, in their partition and bucket, and every other bucket
// complete.
func TestAuditFindsDeletedEventsAndNothingElse(t *testing.T) {
	stack := throttletest.Start(t, throttletest.Options{DataDir: t.TempDir()})
	const events, auditTopic, width = "au.events", "au.audit", time.Second
	addr := freeAddr(t)
	for k, v := range map[string]string{
		"KAFKA_BROKERS": strings.Join(stack.Brokers(), ","), "SCHEMA_REGISTRY_URL": stack.RegistryURL(),
		"ADMIN_ADDR": addr, "INSTANCE_ID": "proc-audit", "EVENTS_TOPIC": events, "EVENTS_TOPIC_PARTITIONS": "3",
		"PROCESSED_TOPIC": "au.processed", "DLQ_TOPIC": "au.dlq", "THROTTLE_TOPIC": "au.throttles", "CONSUMER_GROUP": "au",
		"COMMIT_INTERVAL": "50ms", "AUDIT_TOPIC": auditTopic, "AUDIT_INTERVAL": "100ms", "AUDIT_BUCKET": width.String(),
		"AUDIT_GRACE": "1s", "AUDIT_WINDOW": "1h", "MIN_EVENTS": "1000000000", "AGE_MIN_EVENTS": "1000000000",
	} {
		t.Setenv(k, v)
	}
	cfg, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	kc := stack.Kafka()
	// As ingestion creates it: cleanup.policy=delete (a broker refuses DeleteRecords on a
	// compacted topic).
	if _, err := cluster.CreateTopics(t.Context(), kc, event.TopicConfig(events, 3, cfg.ReplicationFactor, cfg.MinInsyncReplicas)); err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.CreateTopics(t.Context(), kc, audit.TopicConfig(auditTopic, cfg.ReplicationFactor, cfg.MinInsyncReplicas)); err != nil {
		t.Fatal(err)
	}
	in := newTestIngestion(t, kc, events, auditTopic, width)

	// Before processing runs: accept 90 events, then delete the first 7 of partition 1.
	first := in.accept(t, 90)
	const deleted = 7
	lostBucket := map[int64]int64{} // bucket → events deleted in it
	n := 0
	for _, m := range first {
		if m.Partition == 1 && n < deleted {
			ms := m.Time.UnixMilli()
			lostBucket[ms-ms%width.Milliseconds()]++
			n++
		}
	}
	if n != deleted {
		t.Fatalf("only %d events on partition 1", n)
	}
	deleteRecords(t, stack.Brokers(), events, 1, deleted)
	deletedAt := time.Now()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- runWith(ctx, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)), cfg, newThrottleTopic)
	}()
	metric := func(name, label string) int64 {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		m := regexp.MustCompile(regexp.QuoteMeta(name+"{"+label+"}") + ` (\d+)`).FindSubmatch(b)
		if m == nil {
			return -1
		}
		v, _ := strconv.ParseInt(string(m[1]), 10, 64)
		return v
	}
	handled := func() int64 { return metric("sluice_processing_events_total", `outcome="handled"`) }
	waitService(t, done, "the first events handled", func() bool { return handled() == 90-deleted })

	// The broker and the registry go away; more events are accepted once Kafka is back.
	// A broker writes a moved log start to disk only at its next checkpoint (the test
	// cluster's: every 500 ms): before it, killing every node would bring the deleted
	// events back.
	time.Sleep(time.Until(deletedAt.Add(2 * time.Second)))
	stack.StopRegistry()
	stack.StopBroker()
	time.Sleep(2 * time.Second)
	if err := stack.StartBroker(); err != nil {
		t.Fatal(err)
	}
	if got := logStart(t, stack.Brokers(), events, 1); got != deleted {
		t.Fatalf("after the restart, partition 1 starts at %d, not %d: the deletion did not survive", got, deleted)
	}
	if err := stack.StartRegistry(); err != nil {
		t.Fatal(err)
	}
	in.accept(t, 60)
	total := int64(150)

	// Every event handled once the consumer is back in its group, every bucket settled.
	// A write the test retried after the restart may have put some events on the topic
	// twice (as kafka-go's retries do), and the rejoined consumer may read again what it
	// had not committed: the audit counts both as duplicates, so every handling beyond
	// the first of each event is one.
	var seen string
	waitService(t, done, "every bucket settled and reconciled", func() bool {
		acc, open := metric("sluice_audit_events", `kind="accepted"`), metric("sluice_audit_buckets", `status="open"`)
		missing, dups := metric("sluice_audit_events", `kind="missing"`), metric("sluice_audit_events", `kind="duplicates"`)
		if now := fmt.Sprintf("accepted %d, open %d, missing %d, duplicates %d, handled %d", acc, open, missing, dups, handled()); now != seen {
			seen = now
			t.Logf("audit metrics: %s", now)
		}
		return acc == total && open == 0 && missing <= deleted && handled()+metric("sluice_processing_events_total", `outcome="dead_lettered"`) == total-deleted+dups
	})
	missing, over := metric("sluice_audit_events", `kind="missing"`), metric("sluice_audit_events", `kind="over"`)
	short := metric("sluice_audit_buckets", `status="short"`)
	if missing != deleted || over != 0 || short != int64(len(lostBucket)) {
		t.Fatalf("metrics: missing %d, over %d, short buckets %d; want %d missing in %d buckets, none over", missing, over, short, deleted, len(lostBucket))
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}

	book := audit.NewBook(nil, 0)
	if _, err := follow.Scan(t.Context(), kc, auditTopic, func(m kafka.Message) error { return book.Apply(t.Context(), m) }); err != nil {
		t.Fatal(err)
	}
	rows := book.Reconcile(time.Now(), 0)
	var sum audit.Totals
	for _, r := range rows {
		want := int64(0)
		if r.Partition == 1 {
			want = lostBucket[r.Bucket.UnixMilli()]
		}
		status := audit.Complete
		if want > 0 {
			status = audit.Short
		}
		if r.Missing != want || r.Extra != 0 || r.Status != status {
			t.Errorf("partition %d bucket %s: %+v; want %d missing (%s)", r.Partition, r.Bucket.Format("15:04:05"), r, want, status)
		}
	}
	sum = audit.Sum(rows)
	if sum.Accepted != total || sum.Forwarded-sum.Duplicates > total-deleted || sum.Forwarded < total-deleted || sum.Missing != deleted || book.Skipped() != 0 {
		t.Fatalf("totals %+v, %d skipped: want %d accepted, %d forwarded (and copies), %d missing", sum, book.Skipped(), total, total-deleted, deleted)
	}
	t.Logf("audit: %d buckets, %d accepted, %d forwarded, %d duplicates, %d missing (deleted %d on partition 1), %d over",
		len(rows), sum.Accepted, sum.Forwarded, sum.Duplicates, sum.Missing, deleted, sum.Extra)
}
