package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

// TestBrokerRestart: every broker stops and starts again (same containers, their logs
// kept), so that Kafka is away altogether for a while.
// Meanwhile ingestion keeps enforcing the throttles it knew; afterwards every service
// reconnects by itself, no throttle is lost, and new throttles flow again.
func TestBrokerRestart(t *testing.T) {
	s := newStack(t, "broker-restart")
	s.waitFleet(t, 2)
	bases := s.bases(t)
	topic := throttle.DefaultTopic

	// Throttles set before: one for a customer that keeps sending, others idle. Two
	// events an hour: one per replica, used up at once, never refilled during the test.
	throttled := uniq("brk-throttled")
	bystander := uniq("brk-bystander")
	before := map[string]string{}
	th := s.setThrottle(t, setRequest{Customer: throttled, Limit: 2, Window: "1h", Duration: "30m"})
	before[throttled] = th.ID
	for i := range 10 {
		c := fmt.Sprintf("%s-other-%d", throttled, i)
		before[c] = s.setThrottle(t, setRequest{Customer: c, Limit: 100, Window: "1m", Duration: "30m"}).ID
	}
	for c, id := range before {
		waitVisible(t, bases, c, id, 30*time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for i, b := range bases {
		for n := 0; postEvent(ctx, b, throttled) != http.StatusTooManyRequests; n++ {
			if n > 5 {
				t.Fatalf("replica %d never refused %s", i+1, throttled)
			}
		}
	}

	// Traffic all along: the throttled customer, a bystander, and a readiness probe of
	// each replica.
	tr := startTraffic(bases, throttled, bystander)
	defer tr.halt()

	time.Sleep(time.Second)
	// Every broker of the cluster at once: Kafka is away altogether.
	stopAt := time.Now()
	if err := s.eachBroker(func(b *node) error { return s.stop(ctx, b, 10*time.Second) }); err != nil {
		t.Fatal(err)
	}
	stoppedAt := time.Now()
	time.Sleep(3 * time.Second)
	startAt := time.Now()
	if err := s.eachBroker(func(b *node) error { return s.start(ctx, b) }); err != nil {
		t.Fatal(err)
	}
	startedAt := time.Now()
	report(t, "%d broker(s) stopped in %s, down %s, started in %s", len(s.brokers), round(stoppedAt.Sub(stopAt)), round(startAt.Sub(stoppedAt)), round(startedAt.Sub(startAt)))

	// Reconnection: processing publishes again, and both replicas read it.
	after := uniq("brk-after")
	th2 := s.setThrottle(t, setRequest{Customer: after, Limit: 100, Window: "1m", Duration: "30m"})
	seen := waitVisible(t, bases, after, th2.ID, time.Minute)
	for i, at := range seen {
		report(t, "replica %d shows a throttle set after the restart %s after the broker started", i+1, round(at.Sub(startAt)))
	}
	// The bystander's events are written again on both replicas.
	for i, b := range bases {
		eventually(t, time.Minute, 100*time.Millisecond, "bystander accepted again", func(ctx context.Context) (bool, string) {
			status := postEvent(ctx, b, bystander)
			return status == http.StatusAccepted, fmt.Sprintf("status %d", status)
		})
		// Freshness comes from the table's next watermark poll (every second), which can
		// lag the first accepted write by up to that long.
		eventually(t, 15*time.Second, 100*time.Millisecond, "table fresh again", func(ctx context.Context) (bool, string) {
			v, err := view(ctx, b)
			return err == nil && v.Fresh && v.Ready, fmt.Sprintf("ready %v, fresh %v (%v)", v.Ready, v.Fresh, err)
		})
		report(t, "replica %d accepts events again %s after the broker started", i+1, round(time.Since(startAt)))
	}
	time.Sleep(500 * time.Millisecond)
	tr.halt()

	// Enforcement throughout: the throttled customer was refused every time, while the
	// broker was away too; never accepted, never a 5xx.
	counts, down := tr.check(t, stopAt, startedAt)
	report(t, "while the broker was away: throttled customer %v, bystander %v, /readyz %v (status: count)", down["throttled"], down["bystander"], down["readyz"])
	report(t, "whole run: throttled customer %v, bystander %v, /readyz %v", counts["throttled"], counts["bystander"], counts["readyz"])

	// No throttle lost: the log, both replicas and processing still have every one.
	d := s.mustDump(t, topic)
	model, _, err := replay(d, s.codec(t), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	list, err := s.adminList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	inAdmin := map[string]string{}
	for _, a := range list {
		inAdmin[a.Customer] = a.ID
	}
	views := make([]replicaThrottles, len(bases))
	for i, b := range bases {
		if views[i], err = view(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	for c, id := range before {
		if got := model[c].ID; got != id {
			t.Errorf("log after the restart: %s has throttle %q, want %q", c, got, id)
		}
		if got := inAdmin[c]; got != id {
			t.Errorf("processing after the restart: %s has throttle %q, want %q", c, got, id)
		}
		for i, v := range views {
			if got, _ := v.find(c); got.ID != id {
				t.Errorf("replica %d after the restart: %s has throttle %q, want %q", i+1, c, got.ID, id)
			}
		}
	}
	report(t, "all %d throttles set before the restart are on the log, in processing and on both replicas", len(before))
}
