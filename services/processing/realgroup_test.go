package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/pkg/throttle/follow"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
	"github.com/sluice-dev/sluice/services/platform/audit"
	"github.com/sluice-dev/sluice/services/platform/event"
)

// TestConsumerGroupKill (issue 17 (d)): two ingestion replicas and two processing
// replicas run as processes. One processing replica is killed with SIGKILL mid-stream
// (no final commit, no leave-group: the group notices only when its session times out).
// Every event an ingestion replica answered 202 reaches the processed or dead-letter
// topic at least once (counted by id), and the group's committed offset of every events
// partition reaches the partition's end. The audit agrees: nothing missing, and what was
// processed twice counted as duplicates (or, for a retried produce of ingestion's, as
// over).
func TestConsumerGroupKill(t *testing.T) {
	stack := throttletest.Start(t, throttletest.Options{})
	bin := t.TempDir()
	ingestion := buildBinary(t, bin, "ingestion", "github.com/sluice-dev/sluice/services/ingestion")
	processing := buildBinary(t, bin, "processing", ".")

	const (
		events     = "gk.events"
		processed  = "gk.processed"
		dlq        = "gk.dlq"
		group      = "gk-processing"
		partitions = 6
	)
	common := []string{
		"KAFKA_BROKERS=" + strings.Join(stack.Brokers(), ","), "SCHEMA_REGISTRY_URL=" + stack.RegistryURL(),
		"THROTTLE_TOPIC=gk.throttles", "EVENTS_TOPIC=" + events, "EVENTS_TOPIC_PARTITIONS=" + strconv.Itoa(partitions),
		"LOG_LEVEL=warn", "AUDIT_TOPIC=gk.audit", "AUDIT_INTERVAL=200ms",
	}
	var ingest []string
	for i := range 2 {
		addr := freeAddr(t)
		startProcess(t, ingestion, append(common, "HTTP_ADDR="+addr, "REPLICA_ID=gk-in-"+strconv.Itoa(i), "MEMBERS_TOPIC=gk.members"))
		ingest = append(ingest, "http://"+addr)
	}
	var procs []*exec.Cmd
	var admins []string
	for i := range 2 {
		addr := freeAddr(t)
		procs = append(procs, startProcess(t, processing, append(common,
			"ADMIN_ADDR="+addr, "ADMIN_TOKEN=tok", "INSTANCE_ID=gk-proc-"+strconv.Itoa(i),
			"CONSUMER_GROUP="+group, "PROCESSED_TOPIC="+processed, "DLQ_TOPIC="+dlq, "COMMIT_INTERVAL=200ms",
			// Nobody floods here: no throttle may refuse the test's events.
			"MIN_EVENTS=1000000000", "AGE_MIN_EVENTS=1000000000")))
		admins = append(admins, "http://"+addr)
	}
	for _, u := range append(append([]string{}, ingest...), admins...) {
		waitHTTP(t, u+"/readyz", 90*time.Second)
	}

	// Events in requests of 20, one customer each, alternating ingestion replicas; the
	// first processing replica is killed after a third of them.
	const requests, perRequest, killAt = 300, 20, 100
	acked := map[string]bool{}
	var refused int
	var killedAt time.Time
	for r := range requests {
		if r == killAt {
			if err := procs[0].Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killedAt = time.Now()
			t.Logf("killed processing replica 0 (SIGKILL) after %d acknowledged events", len(acked))
		}
		customer := "gk-customer-" + strconv.Itoa(r%30)
		var body bytes.Buffer
		ids := make([]string, perRequest)
		body.WriteByte('[')
		for i := range perRequest {
			ids[i] = fmt.Sprintf("ev-%d-%d", r, i)
			if i > 0 {
				body.WriteByte(',')
			}
			fmt.Fprintf(&body, `{"customer":%q,"id":%q}`, customer, ids[i])
		}
		body.WriteByte(']')
		resp, err := http.Post(ingest[r%2]+"/v1/events", "application/json", &body)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			refused++
			continue
		}
		for _, id := range ids {
			acked[id] = true
		}
	}
	if len(acked) < requests*perRequest*9/10 {
		t.Fatalf("only %d of %d events acknowledged (%d requests refused)", len(acked), requests*perRequest, refused)
	}

	// Every acknowledged id in the processed or dead-letter topic, read by an independent
	// client from the start.
	seen := map[string]int{}
	cl, err := kgo.NewClient(kgo.SeedBrokers(stack.Brokers()...), kgo.ConsumeTopics(processed, dlq),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	missing := func() int {
		n := 0
		for id := range acked {
			if seen[id] == 0 {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(3 * time.Minute)
	for missing() > 0 && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			if ev, err := event.Decode(r.Value); err == nil {
				seen[ev.ID]++
			}
		})
	}
	if n := missing(); n > 0 {
		t.Fatalf("%d of %d acknowledged events never processed after 3 minutes", n, len(acked))
	}
	allProcessed := time.Since(killedAt)
	dups := 0
	for id := range acked {
		dups += seen[id] - 1
	}

	// No partition left behind: the group's committed offset reaches every partition's end.
	kc := &kafka.Client{Addr: kafka.TCP(stack.Brokers()...), Timeout: 10 * time.Second}
	behind := func() map[int]int64 {
		req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
		ids := make([]int, partitions)
		for p := range partitions {
			ids[p] = p
			req.Topics[events] = append(req.Topics[events], kafka.LastOffsetOf(p))
		}
		ends, err := kc.ListOffsets(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		committed, err := kc.OffsetFetch(t.Context(), &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{events: ids}})
		if err != nil {
			t.Fatal(err)
		}
		got := map[int]int64{}
		for _, p := range committed.Topics[events] {
			got[p.Partition] = p.CommittedOffset
		}
		lag := map[int]int64{}
		for _, po := range ends.Topics[events] {
			if got[po.Partition] < po.LastOffset {
				lag[po.Partition] = po.LastOffset - got[po.Partition]
			}
		}
		return lag
	}
	lag := behind()
	for len(lag) > 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		lag = behind()
	}
	if len(lag) > 0 {
		t.Fatalf("partitions left behind (partition → uncommitted events): %v", lag)
	}
	// The audit of the run: every accepted event counted once by ingestion, none missing
	// in processing. An event the killed replica handled after its last published count
	// is handled again by the next owner and counted once: the audit's duplicates (and
	// copies it could not tell, over) are the events processed twice less those.
	// Reconciled at now: the replicas still running are alive, the killed one is not.
	book := audit.NewBook(nil, 0)
	var sum audit.Totals
	var rows []audit.Row
	for time.Now().Before(deadline) {
		book = audit.NewBook(nil, 0)
		if _, err := follow.Scan(t.Context(), stack.Kafka(), "gk.audit", func(m kafka.Message) error { return book.Apply(t.Context(), m) }); err != nil {
			t.Fatal(err)
		}
		rows = book.Reconcile(time.Now(), 0)
		if sum = audit.Sum(rows); sum.Accepted == int64(len(acked)) && sum.Missing == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The reconciliation reports the killed replica on the buckets it was counting.
	named := map[string]bool{}
	for _, r := range rows {
		for _, inc := range r.Unpublished {
			named[inc] = true
		}
	}
	for inc := range named {
		if !strings.HasPrefix(inc, "processing/gk-proc-0.") {
			t.Errorf("buckets name %s as killed; only gk-proc-0 was", inc)
		}
	}
	if len(named) != 1 {
		t.Errorf("killed incarnations named %v: want gk-proc-0's", named)
	}
	if sum.Accepted != int64(len(acked)) || sum.Missing != 0 || sum.Duplicates+sum.Extra > int64(dups) || book.Skipped() != 0 {
		t.Fatalf("audit %+v (%d records skipped): want %d accepted, 0 missing, and at most the %d processed twice as duplicates plus over",
			sum, book.Skipped(), len(acked), dups)
	}
	t.Logf("audit: %d accepted, %d forwarded, %d dead-lettered, %d duplicates (of %d events processed twice), %d missing, %d over, in %d buckets; killed: %v",
		sum.Accepted, sum.Forwarded, sum.DeadLettered, sum.Duplicates, dups, sum.Missing, sum.Extra, len(rows), slices.Sorted(maps.Keys(named)))
	t.Logf("consumer group, one of 2 processing replicas killed: %d events acknowledged (%d requests refused), all %d processed "+
		"(%d processed twice), %v from the kill to the last; all %d partitions committed to their end",
		len(acked), refused, len(acked), dups, allProcessed.Round(100*time.Millisecond), partitions)
}

// buildBinary builds the main package pkg into dir and returns the binary's path.
func buildBinary(t *testing.T, dir, name, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// startProcess runs path with env (and PATH) until the test ends; its output is shown
// if the test fails.
func startProcess(t *testing.T, path string, env []string) *exec.Cmd {
	t.Helper()
	cmd, _ := startProcessOut(t, path, env)
	return cmd
}

// startProcessOut is startProcess that also returns the process's output, stdout and
// stderr together.
func startProcessOut(t *testing.T, path string, env []string) (*exec.Cmd, *lockedBuffer) {
	t.Helper()
	out := &lockedBuffer{}
	cmd := exec.Command(path)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("output of %s:\n%s", filepath.Base(path), out.String())
		}
	})
	return cmd, out
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitHTTP waits until url answers 200.
func waitHTTP(t *testing.T, url string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %v (last: %v)", url, within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
