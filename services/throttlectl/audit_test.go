package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/services/platform/audit"
)

// TestAuditPrintsTheReconciliation: counts published by an ingestion and a processing
// tally (one processing incarnation crashed and its successor handled some offsets
// again) reach `throttlectl audit` as one short bucket, one complete one with its
// duplicates, and an old one left out by --since; the exit code says a bucket is short.
func TestAuditPrintsTheReconciliation(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	topic := topicName(t, "-audit")
	kc := cluster.Config{Brokers: c.s.Brokers()}
	if _, err := cluster.CreateTopics(t.Context(), kc, audit.TopicConfig(topic, 1, 1)); err != nil {
		t.Fatal(err)
	}
	w, err := audit.NewWriter(kc, topic)
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.CloseWriter(w)
	now := time.Now().Truncate(time.Minute)
	b1, b2, old := now.Add(-5*time.Minute), now.Add(-4*time.Minute), now.Add(-3*time.Hour)
	tally := func(tier string) *audit.Tally {
		tl, err := audit.New(tier, audit.Incarnation(tier), w)
		if err != nil {
			t.Fatal(err)
		}
		return tl
	}
	in := tally(audit.Ingestion)
	var msgs []kafka.Message
	for i := range 10 {
		msgs = append(msgs, kafka.Message{Partition: 0, Time: b1.Add(time.Duration(i) * time.Second)}, kafka.Message{Partition: 2, Time: b2})
	}
	msgs = append(msgs, kafka.Message{Partition: 0, Time: old})
	in.Accepted(msgs)
	crashed, next := tally(audit.Processing), tally(audit.Processing)
	for off := range int64(8) { // partition 0, b1: 8 of 10, two never read
		crashed.Handled(0, off, b1, "", off == 3)
	}
	for off := range int64(10) { // partition 2, b2: all, 4 of them twice
		if off < 4 {
			crashed.Handled(2, 100+off, b2, "", false)
		}
		next.Handled(2, 100+off, b2, "", false)
	}
	next.Handled(0, 99, old, "", false)
	for _, tl := range []*audit.Tally{in, crashed, next} {
		if err := tl.Flush(t.Context(), true); err != nil {
			t.Fatal(err)
		}
	}

	r := c.run("audit", "--audit-topic", topic, "--since", "1h", "--output", "json")
	if r.code != exitShort {
		t.Fatalf("exit %d, want %d (a short bucket); stderr %s", r.code, exitShort, r.stderr)
	}
	var rep auditReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("%v in %s", err, r.stdout)
	}
	if len(rep.Buckets) != 2 {
		t.Fatalf("%d buckets, want the 2 of the last hour: %s", len(rep.Buckets), r.stdout)
	}
	short, dup := rep.Buckets[0], rep.Buckets[1]
	if short.Partition != 0 || !short.Bucket.Equal(b1) || short.Status != audit.Short || short.Missing != 2 || short.Forwarded != 7 || short.DeadLettered != 1 {
		t.Errorf("first bucket %+v: want partition 0 short by 2 (7 forwarded, 1 dead-lettered)", short)
	}
	if dup.Partition != 2 || dup.Status != audit.Complete || dup.Duplicates != 4 || dup.Forwarded != 10 {
		t.Errorf("second bucket %+v: want partition 2 complete with 4 duplicates", dup)
	}
	if strings.Contains(r.stdout, old.Format(time.RFC3339)) {
		t.Errorf("the bucket of 3 hours ago is shown with --since 1h")
	}
	text := c.run("audit", "--audit-topic", topic, "--since", "4h")
	for _, want := range []string{"short by 2", "complete", "1 short", "missing 2, over 0"} {
		if !strings.Contains(text.stdout, want) {
			t.Errorf("text output lacks %q:\n%s", want, text.stdout)
		}
	}
	if bad := c.run("audit", "--audit-topic", topic, "--since", "-1h"); bad.code != exitUsage {
		t.Errorf("--since -1h: exit %d, want %d", bad.code, exitUsage)
	}
	t.Logf("throttlectl audit:\n%s", text.stdout)
}
