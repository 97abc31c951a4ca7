package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

// TestExpiry: a throttle stops being enforced at its expires_at, the sweeper writes an
// expiry tombstone for it to the topic, and once compaction has run the customer's key
// is gone from the log altogether.
func TestExpiry(t *testing.T) {
	s := sharedStack(t)
	s.waitFleet(t, 2)
	bases := s.bases(t)
	topic := throttle.DefaultTopic

	// The topic keeps tombstones a day (delete.retention.ms): shorten that, as an
	// operator could, so that the last step does not take a day. On a real broker the
	// active segment is never cleaned either: roll segments every second and clean
	// at once.
	cfgs := map[string]string{"delete.retention.ms": "1000"}
	if !s.img.fakeKafka {
		cfgs["segment.ms"] = "1000"
		cfgs["min.compaction.lag.ms"] = "0"
		cfgs["min.cleanable.dirty.ratio"] = "0.01"
	}
	s.setTopicConfigs(t, topic, cfgs)

	customer := uniq("expiry")
	// One event per hour, shared by two replicas: one each, and none comes back before
	// the throttle expires.
	th := s.setThrottle(t, setRequest{Customer: customer, Limit: 2, Window: "1h", Duration: "4s", Reason: "e2e: expiry"})
	waitVisible(t, bases, customer, th.ID, 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i, b := range bases {
		for n := 0; postEvent(ctx, b, customer) != http.StatusTooManyRequests; n++ {
			if n > 5 {
				t.Fatalf("replica %d never refused %s", i+1, customer)
			}
		}
	}
	if time.Now().After(th.ExpiresAt.Add(-time.Second)) {
		t.Fatalf("too slow: the throttle expires at %s, before the check can start", th.ExpiresAt)
	}

	// Enforcement stops at expires_at, not before, and not long after.
	stopped := make([]time.Time, len(bases))
	for remaining := len(bases); remaining > 0; {
		for i, b := range bases {
			if !stopped[i].IsZero() {
				continue
			}
			status := postEvent(ctx, b, customer)
			switch {
			case status == http.StatusAccepted:
				stopped[i] = time.Now()
				remaining--
				if stopped[i].Before(th.ExpiresAt) {
					t.Errorf("replica %d accepted an event at %s, before the throttle expired at %s", i+1, stopped[i].Format(time.RFC3339Nano), th.ExpiresAt.Format(time.RFC3339Nano))
				}
			case status != http.StatusTooManyRequests:
				t.Fatalf("replica %d: got status %d, want 202 or 429", i+1, status)
			}
		}
		if time.Since(th.ExpiresAt) > 10*time.Second {
			t.Fatalf("still enforced 10 s after expires_at %s", th.ExpiresAt)
		}
		time.Sleep(2 * time.Millisecond)
	}
	for i, at := range stopped {
		report(t, "replica %d accepts again %s after expires_at", i+1, round(at.Sub(th.ExpiresAt)))
	}

	// The sweeper tombstones it (after SWEEP_GRACE), naming the throttle it expires.
	var partitions, partition int
	at := eventuallyAt(t, 30*time.Second, 50*time.Millisecond, "expiry tombstone on the topic", func(ctx context.Context) (bool, string) {
		d, err := s.dump(ctx, topic)
		if err != nil {
			return false, err.Error()
		}
		recs := d.byKey(customer)
		if len(recs) == 0 {
			return false, "no record of the key"
		}
		last := recs[len(recs)-1]
		id, ok := last.header(throttle.HeaderExpires)
		if last.Value != nil || !ok {
			return false, fmt.Sprintf("last record of the key at offset %d is not an expiry tombstone", last.Offset)
		}
		if id != th.ID {
			t.Fatalf("expiry tombstone names throttle %q, want %q", id, th.ID)
		}
		partitions, partition = len(d.Partitions), last.partition()
		return true, ""
	})
	report(t, "expiry tombstone on the topic %s after expires_at (SWEEP_GRACE %s)", round(at.Sub(th.ExpiresAt)), sweepGrace)
	if at.Before(th.ExpiresAt.Add(sweepGrace)) {
		t.Errorf("tombstone seen %s after expiry, before SWEEP_GRACE %s", at.Sub(th.ExpiresAt), sweepGrace)
	}

	// The last batch of a partition (the active segment) is never compacted: write a
	// throttle for another customer on the same partition, so the tombstone is not last.
	// A real cleaner also needs a second pass to drop the tombstone (it stamps a delete
	// horizon on the first, KIP-534), and cleans a partition only when it has new dirty
	// segments: keep writing the filler, once a second, which rolls a segment each time.
	filler := customerOnPartition(uniq("filler"), partition, partitions)
	fill := setRequest{Customer: filler, Limit: 100, Window: "1m", Duration: "10m", Reason: "e2e: filler"}
	s.setThrottle(t, fill)
	gone := eventuallyAt(t, time.Minute, time.Second, "the key compacted away", func(ctx context.Context) (bool, string) {
		if _, err := s.trySet(ctx, fill); err != nil {
			return false, err.Error()
		}
		d, err := s.dump(ctx, topic)
		if err != nil {
			return false, err.Error()
		}
		if n := len(d.byKey(customer)); n > 0 {
			return false, fmt.Sprintf("%d records of the key left", n)
		}
		return true, ""
	})
	report(t, "key gone from the log %s after the tombstone appeared", round(gone.Sub(at)))

	for i, b := range bases {
		if _, found, err := replicaThrottle(ctx, b, customer); err != nil || found {
			t.Errorf("replica %d still shows the expired throttle (found %v, %v)", i+1, found, err)
		}
	}
	s.liftThrottle(t, filler)
}

// eventuallyAt is eventually, returning the time the condition first held.
func eventuallyAt(t *testing.T, timeout, interval time.Duration, what string, cond func(ctx context.Context) (bool, string)) time.Time {
	t.Helper()
	var at time.Time
	eventually(t, timeout, interval, what, func(ctx context.Context) (bool, string) {
		ok, why := cond(ctx)
		if ok {
			at = time.Now()
		}
		return ok, why
	})
	return at
}
