package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

// TestRecoveryByReplay: an ingestion replica is killed with SIGKILL and a fresh one
// takes its place. The fresh one rebuilds its throttles by reading the topic from
// offset zero: it reports ready only once it has, and at that moment its throttles are
// exactly those the topic's log gives, key by key.
func TestRecoveryByReplay(t *testing.T) {
	// A stack of its own: the log is made large, so that the rebuild takes long enough
	// to be seen and measured, and that many throttles would slow every other
	// scenario's views down.
	s := newStack(t, "recovery")
	topic := throttle.DefaultTopic
	prefix := uniq("replay")
	codec := s.codec(t)

	// The bulk of the log: throttles of distinct customers (so compaction keeps them
	// all), written by a raw client as processing would write them.
	const bulk = 20000
	seedStart := time.Now()
	now := seedStart.UTC().Truncate(time.Millisecond)
	batch := make([]probeRecord, 0, 2500)
	for i := range bulk {
		r := throttle.Record{
			ID: fmt.Sprintf("%s-bulk-id-%05d", prefix, i), Customer: fmt.Sprintf("%s-bulk-%05d", prefix, i),
			Limit: 50, Window: time.Minute, CreatedAt: now, ExpiresAt: now.Add(30 * time.Minute),
			Reason: throttle.Reason{Kind: throttle.ReasonManual, Note: "e2e: replay bulk"}, SetBy: "e2e",
		}
		v, err := codec.Encode(&r)
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, probeRecord{Key: []byte(r.Customer), Value: v})
		if len(batch) == cap(batch) || i == bulk-1 {
			s.produce(t, topic, batch...)
			batch = batch[:0]
		}
	}

	// Then what operators do, through the admin API, 8 at once: 200 throttles, then 60
	// of them replaced by newer ones, then 40 lifted; and a poison record.
	const customers, replaced, lifted = 200, 60, 40
	name := func(i int) string { return fmt.Sprintf("%s-%03d", prefix, i) }
	set := func(ctx context.Context, i int) error {
		_, err := s.trySet(ctx, setRequest{Customer: name(i), Limit: 50, Window: "1m", Duration: "30m", Reason: "e2e: replay seed"})
		return err
	}
	lift := func(ctx context.Context, i int) error { return s.tryLift(ctx, name(i)) }
	for _, phase := range []struct {
		from, to int
		op       func(context.Context, int) error
	}{
		{0, customers, set},
		{0, replaced, set},
		{customers - lifted, customers, lift},
	} {
		if err := parallel(8, phase.from, phase.to, phase.op); err != nil {
			t.Fatalf("seed the topic: %v", err)
		}
	}
	poisonKey := prefix + "-poison"
	s.produce(t, topic, probeRecord{Key: []byte(poisonKey), Value: []byte("not avro")})
	report(t, "seeded %d throttles by a raw client, %d through the admin API, %d of them replaced, %d lifted, and a poison record, in %s",
		bulk, customers, replaced, lifted, since(seedStart))

	// The log as the fresh replica will read it, and what a table must make of it.
	before := s.mustDump(t, topic)
	want, poison, err := replay(before, codec, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := want[name(customers-1)]; ok {
		t.Fatalf("replay of the log keeps a lifted throttle: the model or the log is wrong")
	}

	// Kill a replica: no graceful shutdown, no leaving the fleet.
	victim := s.replicaNodes()[len(s.replicaNodes())-1]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := s.kill(ctx, victim); err != nil {
		t.Fatal(err)
	}

	// A fresh replica: poll its readiness from the moment its container runs.
	created := time.Now()
	fresh, err := s.startIngestion(ctx, untilStarted)
	if err != nil {
		t.Fatal(err)
	}
	s.replace(victim, fresh)
	base := fresh.mustURL(t)
	var serving time.Time
	notReady := 0
	for {
		status := readyz(ctx, base)
		if status != 0 && serving.IsZero() {
			serving = time.Now()
		}
		if status == http.StatusOK {
			break
		}
		if status == http.StatusServiceUnavailable {
			notReady++
		} else if status != 0 {
			t.Fatalf("fresh replica /readyz: got %d, want 503 or 200", status)
		}
		if ctx.Err() != nil {
			t.Fatalf("fresh replica never became ready%s", fresh.logTail(context.Background(), 20))
		}
		time.Sleep(time.Millisecond)
	}
	ready := time.Now()
	got, err := view(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing may have been written meanwhile, or the comparison is with the wrong log.
	// (Compaction may have run: it changes the log, not what it means.)
	after, _, err := replay(s.mustDump(t, topic), codec, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !sameIDs(want, after) {
		t.Fatalf("the throttles on the topic changed during the test (%d, then %d)", len(want), len(after))
	}

	if !got.Ready {
		t.Errorf("GET /v1/throttles says ready=false just after /readyz said ready")
	}
	for _, p := range got.Partitions {
		if !p.CaughtUp {
			t.Errorf("ready, but partition %d is not caught up: %+v", p.Partition, p)
		}
	}
	if got.poisonTotal() != int64(poison) {
		t.Errorf("fresh replica counts %d poison records, the log has %d", got.poisonTotal(), poison)
	}
	compareTables(t, got, want)

	records := 0
	for _, p := range before.Partitions {
		records += int(p.End - p.Start)
	}
	report(t, "fresh replica: serving %s after its container was created, ready %s later: rebuilt %d throttles from %d records (%d offsets, %d poison), answering not ready %d times meanwhile",
		round(serving.Sub(created)), round(ready.Sub(serving)), len(want), len(before.Records), records, poison, notReady)
	if notReady == 0 {
		t.Errorf("the fresh replica was ready on its first answer: the rebuild was not seen")
	}
	if n := fresh.countLines(ctx, "caught up"); n == 0 {
		t.Errorf("the fresh replica never logged that its table caught up")
	}
}

// compareTables checks a replica's throttles against the model, key by key. Throttles
// about to expire are left out on both sides, so that the clock cannot make them differ.
func compareTables(t *testing.T, got replicaThrottles, want map[string]throttle.Record) {
	t.Helper()
	horizon := time.Now().Add(5 * time.Second)
	gotBy := map[string]ingestionThrottle{}
	for _, th := range got.Throttles {
		if th.ExpiresAt.After(horizon) {
			gotBy[th.Customer] = th
		}
	}
	var missing, extra, differ []string
	for c, w := range want {
		if !w.ExpiresAt.After(horizon) {
			continue
		}
		g, ok := gotBy[c]
		switch {
		case !ok:
			missing = append(missing, c)
		case g.ID != w.ID || g.Limit != w.Limit || g.WindowMS != w.Window.Milliseconds() ||
			!g.ExpiresAt.Equal(w.ExpiresAt) || g.Mode != w.Mode.String():
			differ = append(differ, fmt.Sprintf("%s: got %s/%d/%dms/%s/%s, want %s/%d/%dms/%s/%s", c,
				g.ID, g.Limit, g.WindowMS, g.ExpiresAt.Format(time.RFC3339Nano), g.Mode,
				w.ID, w.Limit, w.Window.Milliseconds(), w.ExpiresAt.Format(time.RFC3339Nano), w.Mode))
		}
	}
	for c := range gotBy {
		if w, ok := want[c]; !ok || !w.ExpiresAt.After(horizon) {
			extra = append(extra, c)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	sort.Strings(differ)
	if len(missing)+len(extra)+len(differ) > 0 {
		t.Errorf("replica %s against the log: %d missing %v, %d extra %v, %d different %v",
			got.Replica, len(missing), head(missing), len(extra), head(extra), len(differ), head(differ))
	}
}

// parallel runs op(i) for i in [from, to) on n goroutines, and returns the first error.
func parallel(n, from, to int, op func(ctx context.Context, i int) error) error {
	work := make(chan int)
	errs := make(chan error, to-from)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for i := range work {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				if err := op(ctx, i); err != nil {
					errs <- err
				}
				cancel()
			}
		})
	}
	for i := from; i < to; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	return <-errs
}

func sameIDs(a, b map[string]throttle.Record) bool {
	if len(a) != len(b) {
		return false
	}
	for c, r := range a {
		if b[c].ID != r.ID {
			return false
		}
	}
	return true
}

func head(s []string) []string {
	if len(s) > 5 {
		return s[:5]
	}
	return s
}
