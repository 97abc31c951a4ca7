package e2e

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestFleetShare: a throttled customer's events spread over both replicas by the test's
// own round-robin balancer. Each replica enforces half the limit (it counts the fleet
// from the membership topic), so that together they admit what the throttle allows:
// the limit at once, then the limit per window.
func TestFleetShare(t *testing.T) {
	s := sharedStack(t)
	s.waitFleet(t, 2)
	bases := s.bases(t)
	customer := uniq("fleet")
	const (
		limit  = 40
		window = 2 * time.Second
		run    = 10 * time.Second
	)
	th := s.setThrottle(t, setRequest{Customer: customer, Limit: limit, Window: window.String(), Duration: "10m", Reason: "e2e: fleet share"})
	waitVisible(t, bases, customer, th.ID, 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, b := range bases {
		got, found, err := replicaThrottle(ctx, b, customer)
		if err != nil || !found || got.Share != limit/2 {
			t.Fatalf("replica %d: share %d (found %v, %v), want %d", i+1, got.Share, found, err, limit/2)
		}
	}

	// 8 senders, each an event every 10 ms (800/s offered, 20 times the limit), to the
	// replicas in turn.
	var (
		next     atomic.Int64
		mu       sync.Mutex
		accepted []time.Time
		other    []int
	)
	start := time.Now()
	end := start.Add(run)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for range tick.C {
				if time.Now().After(end) {
					return
				}
				status := postEvent(ctx, bases[int(next.Add(1))%len(bases)], customer)
				mu.Lock()
				switch status {
				case http.StatusAccepted:
					accepted = append(accepted, time.Now())
				case http.StatusTooManyRequests:
				default:
					other = append(other, status)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	mu.Lock()
	defer mu.Unlock()
	if len(other) > 0 {
		t.Errorf("%d answers neither 202 nor 429: %v", len(other), head2(other))
	}

	// A GCRA bucket per replica, of its share: full at first (limit in all), then
	// refilled at limit per window.
	total := len(accepted)
	want := float64(limit) * (1 + elapsed.Seconds()/window.Seconds())
	steady := 0
	for _, at := range accepted {
		if at.Sub(start) >= window {
			steady++
		}
	}
	steadyRate := float64(steady) / (elapsed - window).Seconds()
	wantRate := float64(limit) / window.Seconds()
	report(t, "accepted %d events in %s (expected %.0f: the limit %d at once, then %d per %s); steady rate %.1f/s (limit %.1f/s)",
		total, round(elapsed), want, limit, limit, window, steadyRate, wantRate)
	if r := float64(total) / want; r < 0.85 || r > 1.10 {
		t.Errorf("accepted %d, want %.0f ±10%% (ratio %.2f)", total, want, r)
	}
	if r := steadyRate / wantRate; r < 0.85 || r > 1.10 {
		t.Errorf("steady rate %.1f/s, want %.1f/s ±10%% (ratio %.2f)", steadyRate, wantRate, r)
	}
	s.liftThrottle(t, customer)
}

func head2(s []int) []int {
	if len(s) > 10 {
		return s[:10]
	}
	return s
}
