package e2e

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"
)

// TestAutomaticThrottle: one customer floods the pipeline while three others send a
// trickle. Processing notices (the flood is most of the last 10 s of events), publishes
// a throttle, both ingestion replicas enforce it with 429s, and the quiet customers are
// never refused.
func TestAutomaticThrottle(t *testing.T) {
	s := sharedStack(t)
	s.waitFleet(t, 2)
	bases := s.bases(t)
	admin := s.processing.mustURL(t)
	flood := uniq("flood")
	quiet := []string{uniq("quiet-a"), uniq("quiet-b"), uniq("quiet-c")}

	type outcome struct {
		at      time.Time
		replica int
		status  int
	}
	var (
		mu          sync.Mutex
		floodOut    []outcome
		quietSent   int
		quietFailed []string
	)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	// Quiet customers: 5 events/s each, alternating between the replicas.
	for _, c := range quiet {
		wg.Go(func() {
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				status := postEvent(ctx, bases[i%len(bases)], c)
				if ctx.Err() != nil {
					return
				}
				mu.Lock()
				quietSent++
				if status != http.StatusAccepted {
					quietFailed = append(quietFailed, fmt.Sprintf("%s on replica %d: status %d", c, i%len(bases)+1, status))
				}
				mu.Unlock()
			}
		})
	}
	// The flood: 4 senders, 50 events/s each, alternating between the replicas.
	const floodSenders = 4
	floodStart := time.Now()
	for w := range floodSenders {
		wg.Go(func() {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for i := w; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				r := i % len(bases)
				status := postEvent(ctx, bases[r], flood)
				if ctx.Err() != nil {
					return
				}
				mu.Lock()
				floodOut = append(floodOut, outcome{time.Now(), r, status})
				mu.Unlock()
			}
		})
	}

	// Processing publishes a throttle for the flood, and only for it.
	var th adminThrottle
	eventually(t, time.Minute, 10*time.Millisecond, "processing throttles the flooding customer", func(ctx context.Context) (bool, string) {
		status, _, err := do(ctx, http.MethodGet, admin+"/v1/throttles/"+url.PathEscape(flood), s.token, nil, &th)
		return err == nil && status == http.StatusOK, fmt.Sprintf("status %d, %v", status, err)
	})
	seen := waitVisible(t, bases, flood, th.ID, 30*time.Second)
	if th.Reason.Kind != "automatic" || th.Limit != autoLimit || th.WindowMS != autoWindow.Milliseconds() {
		t.Errorf("throttle %+v: want an automatic throttle of %d per %s", th, autoLimit, autoWindow)
	}
	enforcedFrom := seen[0]
	for _, at := range seen[1:] {
		enforcedFrom = later(enforcedFrom, at)
	}
	// Keep flooding a while with the throttle in force everywhere.
	time.Sleep(3 * time.Second)
	stop()
	wg.Wait()
	floodEnd := time.Now()

	report(t, "detection: throttle created %s after the flood began (metric %s = %.2f)", round(th.CreatedAt.Sub(floodStart)), th.Reason.Metric, th.Reason.Value)
	for i, at := range seen {
		report(t, "propagation: replica %d shows the throttle %s after its created_at", i+1, round(at.Sub(th.CreatedAt)))
	}

	// Once both replicas show it, each admits at most its share: 10 at once, then 10/s.
	share := int64((autoLimit + 1) / 2)
	window := floodEnd.Sub(enforcedFrom)
	// The burst, the rate over the window (rounded up), one for the admission at each end
	// of a GCRA window, and the requests in flight across enforcedFrom (the 4 senders
	// alternate between the replicas: 2 per replica).
	maxAccepted := share + int64(math.Ceil(window.Seconds()*float64(share))) + 1 + int64(floodSenders/len(bases))
	accepted := make([]int64, len(bases))
	refused := make([]int64, len(bases))
	firstRefusal := make([]time.Time, len(bases))
	for _, o := range floodOut {
		if o.status == http.StatusTooManyRequests && firstRefusal[o.replica].IsZero() {
			firstRefusal[o.replica] = o.at
		}
		if o.at.Before(enforcedFrom) {
			continue
		}
		switch o.status {
		case http.StatusAccepted:
			accepted[o.replica]++
		case http.StatusTooManyRequests:
			refused[o.replica]++
		default:
			t.Errorf("flood on replica %d: got status %d, want 202 or 429", o.replica+1, o.status)
		}
	}
	for i := range bases {
		if accepted[i] > maxAccepted || refused[i] == 0 {
			t.Errorf("replica %d, in the %s after the throttle reached both: %d accepted, %d refused; want at most %d accepted and some refused",
				i+1, round(window), accepted[i], refused[i], maxAccepted)
		}
		report(t, "enforcement: replica %d refused the flood first %s after created_at; afterwards %d accepted (%.1f/s, share %d/s), %d refused in %s",
			i+1, round(firstRefusal[i].Sub(th.CreatedAt)), accepted[i], float64(accepted[i])/window.Seconds(), share, refused[i], round(window))
	}

	mu.Lock()
	defer mu.Unlock()
	if len(quietFailed) > 0 {
		t.Errorf("quiet customers refused %d of %d times, first: %s", len(quietFailed), quietSent, quietFailed[0])
	}
	report(t, "quiet customers: %d events, %d refused", quietSent, len(quietFailed))
	for _, c := range quiet {
		status, _, err := do(context.Background(), http.MethodGet, admin+"/v1/throttles/"+url.PathEscape(c), s.token, nil, nil)
		if err != nil || status != http.StatusNotFound {
			t.Errorf("quiet customer %s: GET throttle got %d (%v), want 404", c, status, err)
		}
	}

	// Leave the shared stack without the throttle.
	s.liftThrottle(t, flood)
	waitVisible(t, bases, flood, "", 30*time.Second)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
