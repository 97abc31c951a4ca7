package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pkg/throttle/throttlejson"
)

// httpc talks to every container through its mapped port.
var httpc = &http.Client{
	Timeout: 15 * time.Second,
	Transport: &http.Transport{
		MaxIdleConns: 256, MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second,
	},
}

// do sends a request and decodes a JSON answer into out (when not nil). It returns the
// status, or 0 and the error when there was no answer.
func do(ctx context.Context, method, u, token string, body any, out any) (int, http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, resp.Header, err
	}
	if out != nil && len(b) > 0 && resp.StatusCode < 500 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, resp.Header, fmt.Errorf("decode %s %s answer %d %q: %w", method, u, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode, resp.Header, nil
}

// postEvent sends one event for customer and returns the status (0 when the request
// failed).
func postEvent(ctx context.Context, base, customer string) int {
	status, _, _ := do(ctx, http.MethodPost, base+"/v1/events", "", map[string]any{
		"customer": customer, "payload": map[string]any{"at": time.Now().UnixNano()},
	}, nil)
	return status
}

// ingestionThrottle is a throttle as an ingestion replica shows it: the shared shape
// plus the replica's share.
type ingestionThrottle struct {
	throttlejson.Record
	Share int64 `json:"share"`
}

// replicaThrottles is an ingestion replica's GET /v1/throttles.
type replicaThrottles struct {
	Replica string `json:"replica"`
	Ready   bool   `json:"ready"`
	Fresh   bool   `json:"fresh"`
	Fleet   struct {
		Alive int  `json:"alive"`
		Known bool `json:"known"`
	} `json:"fleet"`
	Partitions []struct {
		Partition int   `json:"partition"`
		Position  int64 `json:"position"`
		End       int64 `json:"end"`
		Lag       int64 `json:"lag"`
		CaughtUp  bool  `json:"caught_up"`
	} `json:"partitions"`
	Poison    map[string]int64    `json:"poison"`
	Throttles []ingestionThrottle `json:"throttles"`
}

func (v replicaThrottles) poisonTotal() int64 {
	var n int64
	for _, c := range v.Poison {
		n += c
	}
	return n
}

func (v replicaThrottles) find(customer string) (ingestionThrottle, bool) {
	for _, th := range v.Throttles {
		if th.Customer == customer {
			return th, true
		}
	}
	return ingestionThrottle{}, false
}

// view fetches a replica's throttles.
func view(ctx context.Context, base string) (replicaThrottles, error) {
	var v replicaThrottles
	status, _, err := do(ctx, http.MethodGet, base+"/v1/throttles", "", nil, &v)
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("GET %s/v1/throttles: status %d", base, status)
	}
	return v, err
}

// replicaThrottle returns the customer's throttle on one replica: found is false on 404.
func replicaThrottle(ctx context.Context, base, customer string) (th ingestionThrottle, found bool, err error) {
	var out struct {
		Throttle ingestionThrottle `json:"throttle"`
	}
	status, _, err := do(ctx, http.MethodGet, base+"/v1/throttles/"+url.PathEscape(customer), "", nil, &out)
	switch {
	case err != nil:
		return th, false, err
	case status == http.StatusOK:
		return out.Throttle, true, nil
	case status == http.StatusNotFound:
		return th, false, nil
	}
	return th, false, fmt.Errorf("GET %s/v1/throttles/%s: status %d", base, customer, status)
}

// readyz returns a service's /readyz status (0 when unreachable).
func readyz(ctx context.Context, base string) int {
	status, _, _ := do(ctx, http.MethodGet, base+"/readyz", "", nil, nil)
	return status
}

// adminThrottle is a throttle as the processing admin API shows it.
type adminThrottle struct {
	ID        string    `json:"id"`
	Customer  string    `json:"customer"`
	Limit     int64     `json:"limit"`
	Window    string    `json:"window"`
	WindowMS  int64     `json:"window_ms"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Reason    struct {
		Kind   string  `json:"kind"`
		Note   string  `json:"note"`
		Metric string  `json:"metric"`
		Value  float64 `json:"value"`
	} `json:"reason"`
	SetBy string `json:"set_by"`
	Mode  string `json:"mode"`
}

// setRequest is the body of POST /v1/throttles.
type setRequest struct {
	// ID, when set, is the client's choice: a retry with the same id sets the same
	// throttle, never a second one.
	ID       string `json:"id,omitempty"`
	Customer string `json:"customer"`
	Limit    int64  `json:"limit"`
	Window   string `json:"window"`
	Duration string `json:"duration"`
	Reason   string `json:"reason,omitempty"`
}

// trySet makes one attempt to set a throttle through the admin API.
func (s *stack) trySet(ctx context.Context, req setRequest) (adminThrottle, error) {
	var out adminThrottle
	base, err := s.processing.url(ctx)
	if err != nil {
		return out, err
	}
	status, _, err := do(ctx, http.MethodPost, base+"/v1/throttles", s.token, req, &out)
	if err == nil && status != http.StatusCreated {
		err = fmt.Errorf("POST /v1/throttles for %s: status %d", req.Customer, status)
	}
	return out, err
}

// tryLift makes one attempt to lift a throttle through the admin API.
func (s *stack) tryLift(ctx context.Context, customer string) error {
	base, err := s.processing.url(ctx)
	if err != nil {
		return err
	}
	status, _, err := do(ctx, http.MethodDelete, base+"/v1/throttles/"+url.PathEscape(customer), s.token, nil, nil)
	if err == nil && status != http.StatusNoContent {
		err = fmt.Errorf("DELETE /v1/throttles/%s: status %d", customer, status)
	}
	return err
}

// setThrottle sets a throttle through the admin API with the stack's token, retrying
// while the API answers 5xx (the broker restarting), for up to a minute.
func (s *stack) setThrottle(t *testing.T, req setRequest) adminThrottle {
	t.Helper()
	var out adminThrottle
	base := s.processing.mustURL(t)
	eventually(t, time.Minute, 100*time.Millisecond, "set throttle for "+req.Customer, func(ctx context.Context) (bool, string) {
		status, _, err := do(ctx, http.MethodPost, base+"/v1/throttles", s.token, req, &out)
		if err != nil || status >= 500 {
			return false, fmt.Sprintf("status %d, %v", status, err)
		}
		if status != http.StatusCreated {
			t.Fatalf("POST /v1/throttles %+v: got status %d, want %d", req, status, http.StatusCreated)
		}
		return true, ""
	})
	return out
}

// liftThrottle lifts a customer's throttle through the admin API, retrying on 5xx.
func (s *stack) liftThrottle(t *testing.T, customer string) {
	t.Helper()
	base := s.processing.mustURL(t)
	eventually(t, time.Minute, 100*time.Millisecond, "lift throttle of "+customer, func(ctx context.Context) (bool, string) {
		status, _, err := do(ctx, http.MethodDelete, base+"/v1/throttles/"+url.PathEscape(customer), s.token, nil, nil)
		if err != nil || status >= 500 {
			return false, fmt.Sprintf("status %d, %v", status, err)
		}
		if status != http.StatusNoContent {
			t.Fatalf("DELETE /v1/throttles/%s: got status %d, want %d", customer, status, http.StatusNoContent)
		}
		return true, ""
	})
}

// adminList returns processing's view of the active throttles.
func (s *stack) adminList(ctx context.Context) ([]adminThrottle, error) {
	base, err := s.processing.url(ctx)
	if err != nil {
		return nil, err
	}
	var out struct {
		Throttles []adminThrottle `json:"throttles"`
	}
	status, _, err := do(ctx, http.MethodGet, base+"/v1/throttles", s.token, nil, &out)
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("GET processing /v1/throttles: status %d", status)
	}
	return out.Throttles, err
}

// eventually calls cond every interval until it returns true, and fails the test with
// its last explanation when timeout passes first. It returns how long it took.
func eventually(t *testing.T, timeout, interval time.Duration, what string, cond func(ctx context.Context) (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	last := ""
	for {
		ctx, cancel := context.WithTimeout(context.Background(), min(10*time.Second, max(time.Until(deadline), time.Second)))
		ok, why := cond(ctx)
		cancel()
		if ok {
			return time.Since(start)
		}
		last = why
		if time.Now().After(deadline) {
			t.Fatalf("%s: not done after %s: %s", what, timeout, last)
		}
		time.Sleep(interval)
	}
}

// waitVisible waits until every replica in bases shows the throttle with id for
// customer (id "" means: no throttle), polling each every few milliseconds, and returns
// when each first saw it.
func waitVisible(t *testing.T, bases []string, customer, id string, timeout time.Duration) []time.Time {
	t.Helper()
	seen := make([]time.Time, len(bases))
	deadline := time.Now().Add(timeout)
	for done := 0; done < len(bases); {
		for i, b := range bases {
			if !seen[i].IsZero() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			th, found, err := replicaThrottle(ctx, b, customer)
			cancel()
			if err != nil {
				continue
			}
			if (id == "" && !found) || (id != "" && found && th.ID == id) {
				seen[i] = time.Now()
				done++
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("throttle %q of %q not visible on every replica after %s (seen: %v)", id, customer, timeout, seen)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return seen
}

// bases returns the URLs of the replicas in service.
func (s *stack) bases(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, n := range s.replicaNodes() {
		out = append(out, n.mustURL(t))
	}
	return out
}

// waitFleet waits until every replica in service counts n alive replicas.
func (s *stack) waitFleet(t *testing.T, n int) {
	t.Helper()
	bases := s.bases(t)
	eventually(t, time.Minute, 100*time.Millisecond, fmt.Sprintf("fleet of %d", n), func(ctx context.Context) (bool, string) {
		var got []string
		ok := true
		for _, b := range bases {
			v, err := view(ctx, b)
			if err != nil {
				return false, err.Error()
			}
			got = append(got, fmt.Sprintf("%s: alive %d known %v", v.Replica, v.Fleet.Alive, v.Fleet.Known))
			ok = ok && v.Fleet.Known && v.Fleet.Alive == n
		}
		return ok, strings.Join(got, "; ")
	})
}

// uniq makes a customer id unique to this run, so that scenarios sharing a stack never
// see each other's throttles.
func uniq(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()%1_000_000_000)
}
