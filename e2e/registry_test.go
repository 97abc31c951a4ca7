package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// TestRegistryDown: with the Schema Registry stopped, the running services carry on
// (they hold the schema they need), but a new ingestion replica cannot decode the topic
// and stays not ready, rather than serving without its throttles; it becomes ready once
// the registry is back.
func TestRegistryDown(t *testing.T) {
	s := newStack(t, "registry-down")
	s.waitFleet(t, 2)
	bases := s.bases(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	first := uniq("reg-first")
	th1 := s.setThrottle(t, setRequest{Customer: first, Limit: 100, Window: "1m", Duration: "30m"})
	waitVisible(t, bases, first, th1.ID, 30*time.Second)

	if err := s.stop(ctx, s.registry, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	down := time.Now()

	// Running services keep working: a throttle set and one lifted reach both replicas,
	// events are accepted, and every service stays ready.
	second := uniq("reg-second")
	th2 := s.setThrottle(t, setRequest{Customer: second, Limit: 2, Window: "1h", Duration: "30m"})
	seen := waitVisible(t, bases, second, th2.ID, 30*time.Second)
	for i, at := range seen {
		report(t, "registry down: replica %d shows a new throttle %s after its created_at", i+1, round(at.Sub(th2.CreatedAt)))
	}
	for i, b := range bases {
		if status := postEvent(ctx, b, second); status != http.StatusAccepted {
			t.Errorf("registry down: replica %d, first event of %s: got %d, want 202", i+1, second, status)
		}
		if status := postEvent(ctx, b, second); status != http.StatusTooManyRequests {
			t.Errorf("registry down: replica %d, second event of %s: got %d, want 429", i+1, second, status)
		}
		if status := postEvent(ctx, b, uniq("reg-bystander")); status != http.StatusAccepted {
			t.Errorf("registry down: replica %d, bystander: got %d, want 202", i+1, status)
		}
		if status := readyz(ctx, b); status != http.StatusOK {
			t.Errorf("registry down: replica %d /readyz: got %d, want 200", i+1, status)
		}
	}
	s.liftThrottle(t, first)
	waitVisible(t, bases, first, "", 30*time.Second)
	if status := readyz(ctx, s.processing.mustURL(t)); status != http.StatusOK {
		t.Errorf("registry down: processing /readyz: got %d, want 200", status)
	}

	// A new replica cannot decode the records and must not report ready.
	fresh, err := s.startIngestion(ctx, untilServing)
	if err != nil {
		t.Fatal(err)
	}
	base := fresh.mustURL(t)
	hold := time.Now().Add(5 * time.Second)
	polls := 0
	for time.Now().Before(hold) {
		if status := readyz(ctx, base); status != http.StatusServiceUnavailable {
			t.Fatalf("new replica with the registry down: /readyz %d, want 503", status)
		}
		if status := postEvent(ctx, base, second); status != http.StatusServiceUnavailable {
			t.Fatalf("new replica with the registry down: event got %d, want 503", status)
		}
		polls++
		time.Sleep(50 * time.Millisecond)
	}
	report(t, "registry down: the new replica answered not ready %d times over 5 s", polls)
	// Whether the not-ready replica counts in the running replicas' fleet (and so lowers
	// their share of each limit) is reported, not asserted: it is a design choice.
	for i, b := range bases {
		if v, err := view(ctx, b); err == nil {
			report(t, "registry down: running replica %d counts %d alive replicas (known %v) while the new one is not ready", i+1, v.Fleet.Alive, v.Fleet.Known)
		}
	}

	// The registry comes back and reads its schemas back from the broker's _schemas
	// topic, the real one and the fake one alike.
	back := time.Now()
	if err := s.start(ctx, s.registry); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	ready := eventuallyAt(t, 2*time.Minute, 10*time.Millisecond, "new replica ready once the registry is back", func(ctx context.Context) (bool, string) {
		return readyz(ctx, base) == http.StatusOK, "not ready"
	})
	report(t, "registry down %s; new replica ready %s after the registry started (start took %s)", round(back.Sub(down)), round(ready.Sub(started)), round(started.Sub(back)))

	v, err := view(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	if th, ok := v.find(second); !ok || th.ID != th2.ID {
		t.Errorf("new replica: %s has %+v (found %v), want id %s", second, th, ok, th2.ID)
	}
	if _, ok := v.find(first); ok {
		t.Errorf("new replica: %s still throttled after its lift", first)
	}
	if v.poisonTotal() != 0 {
		t.Errorf("new replica counted %d poison records (%v): records of a schema it could not fetch must be retried, not skipped", v.poisonTotal(), v.Poison)
	}
}
