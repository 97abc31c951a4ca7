package e2e

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// TestManualThrottle: an operator sets a throttle through the admin API (with the
// token, and only with it), both replicas enforce it, and lifting it ends enforcement on
// both.
func TestManualThrottle(t *testing.T) {
	s := sharedStack(t)
	s.waitFleet(t, 2)
	bases := s.bases(t)
	admin := s.processing.mustURL(t)
	customer := uniq("manual")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	req := setRequest{Customer: customer, Limit: 10, Window: "1m", Duration: "10m", Reason: "e2e: manual"}
	for _, c := range []struct {
		name, token string
		want        int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"wrong token", "not-" + s.token, http.StatusForbidden},
	} {
		status, _, err := do(ctx, http.MethodPost, admin+"/v1/throttles", c.token, req, nil)
		if err != nil || status != c.want {
			t.Fatalf("POST /v1/throttles with %s: got %d (%v), want %d", c.name, status, err, c.want)
		}
	}

	set := time.Now()
	th := s.setThrottle(t, req)
	seen := waitVisible(t, bases, customer, th.ID, 30*time.Second)
	for i, at := range seen {
		report(t, "set: replica %d enforces the throttle %s after the API answered, %s after its created_at", i+1, round(at.Sub(set)), round(at.Sub(th.CreatedAt)))
	}

	// Each replica enforces its share of the limit: 10 across two replicas is 5 each,
	// all of it available at once, then one every 12 s.
	for i, b := range bases {
		v, err := view(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := v.find(customer)
		if !ok || got.Share != 5 || got.Limit != 10 {
			t.Fatalf("replica %d shows %+v (found %v), want limit 10, share 5", i+1, got, ok)
		}
		accepted, refused := 0, 0
		for range 12 {
			status, hdr, err := do(ctx, http.MethodPost, b+"/v1/events", "", map[string]any{"customer": customer}, nil)
			switch {
			case err != nil:
				t.Fatalf("post event: %v", err)
			case status == http.StatusAccepted:
				accepted++
			case status == http.StatusTooManyRequests:
				refused++
				if hdr.Get("Retry-After") == "" {
					t.Errorf("429 without Retry-After")
				}
			default:
				t.Fatalf("post event for %s: got status %d, want 202 or 429", customer, status)
			}
		}
		if accepted < 5 || accepted > 6 {
			t.Errorf("replica %d accepted %d of 12 events, want 5 (its share; 6 if the bucket refilled)", i+1, accepted)
		}
		report(t, "replica %d: %d accepted, %d refused with 429 out of 12", i+1, accepted, refused)
	}

	// Processing's own table shows it too.
	eventually(t, 10*time.Second, 50*time.Millisecond, "processing shows the throttle", func(ctx context.Context) (bool, string) {
		var got adminThrottle
		status, _, err := do(ctx, http.MethodGet, admin+"/v1/throttles/"+url.PathEscape(customer), s.token, nil, &got)
		return err == nil && status == http.StatusOK && got.ID == th.ID, "not yet"
	})

	// Lifting needs the token too.
	status, _, err := do(ctx, http.MethodDelete, admin+"/v1/throttles/"+url.PathEscape(customer), "", nil, nil)
	if err != nil || status != http.StatusUnauthorized {
		t.Fatalf("DELETE without token: got %d (%v), want 401", status, err)
	}
	lift := time.Now()
	s.liftThrottle(t, customer)
	seen = waitVisible(t, bases, customer, "", 30*time.Second)
	for i, at := range seen {
		report(t, "lift: replica %d stops enforcing %s after the API answered", i+1, round(at.Sub(lift)))
	}
	for i, b := range bases {
		if status := postEvent(ctx, b, customer); status != http.StatusAccepted {
			t.Errorf("replica %d after the lift: got status %d, want 202", i+1, status)
		}
	}
}
