package admin_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/throttlejson"
	"github.com/sluice-dev/sluice/services/processing/internal/admin"
	"github.com/sluice-dev/sluice/services/processing/internal/clocktest"
	"github.com/sluice-dev/sluice/services/processing/internal/metrics"
	"github.com/sluice-dev/sluice/services/processing/internal/throttlefake"
)

func (s *server) post(t *testing.T, body string, header map[string]string) response {
	t.Helper()
	return s.doWith(t, "POST", "/v1/throttles", "Bearer "+token, body, header)
}

func recordOf(t *testing.T, r response) throttlejson.Record {
	t.Helper()
	var j throttlejson.Record
	if err := json.Unmarshal(r.body, &j); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	return j
}

// A retried request (same Idempotency-Key) never publishes a second throttle: not on the
// replica that answered first, nor on another one whose table has the throttle.
func TestIdempotencyKeySetsOneThrottle(t *testing.T) {
	ids := 0
	s := newServer(t, admin.Config{Token: token}, admin.WithIDs(func() string { ids++; return "random-" + string(rune('a'+ids)) }))
	key := map[string]string{admin.HeaderIdempotencyKey: "req-7f3a"}
	first := s.post(t, validBody, key)
	if first.status != http.StatusCreated {
		t.Fatalf("first: got %d %s, want 201", first.status, first.body)
	}
	s.clk.Advance(3 * time.Second) // the client retries a little later
	again := s.post(t, validBody, key)
	if again.status != http.StatusCreated || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry: got %d %s (replayed %q), want 201 replayed", again.status, again.body, again.header.Get("Idempotent-Replayed"))
	}
	if a, b := recordOf(t, first), recordOf(t, again); a.ID != b.ID || !a.ExpiresAt.Equal(b.ExpiresAt) {
		t.Fatalf("retry answered %+v, want the first answer %+v", b, a)
	}
	if got := len(s.store.Sets()); got != 1 {
		t.Fatalf("got %d records published, want 1", got)
	}

	// Another replica, whose table has read the throttle: the same key finds it by id.
	other := httptest.NewServer(admin.New(s.store, s.store, admin.Config{Token: token},
		admin.WithClock(s.clk.Now), admin.WithIDs(func() string { return "other-random" })).Handler())
	t.Cleanup(other.Close)
	o := &server{url: other.URL, store: s.store, clk: s.clk}
	r := o.post(t, validBody, key)
	if r.status != http.StatusCreated || recordOf(t, r).ID != recordOf(t, first).ID {
		t.Fatalf("retry on another replica: got %d %s, want 201 with id %s", r.status, r.body, recordOf(t, first).ID)
	}
	if got := len(s.store.Sets()); got != 1 {
		t.Fatalf("got %d records published after a retry on another replica, want 1", got)
	}

	// The same key for another request is refused, and publishes nothing.
	r = s.post(t, strings.Replace(validBody, `"limit":20`, `"limit":5`, 1), key)
	if r.status != http.StatusUnprocessableEntity {
		t.Fatalf("key reused for another request: got %d %s, want 422", r.status, r.body)
	}
	if e := decodeError(t, r); e.Field != admin.HeaderIdempotencyKey {
		t.Errorf("field: got %q, want %s", e.Field, admin.HeaderIdempotencyKey)
	}
	// A key that is not a key.
	r = s.post(t, validBody, map[string]string{admin.HeaderIdempotencyKey: "a b"})
	if r.status != http.StatusBadRequest {
		t.Fatalf("bad key: got %d, want 400", r.status)
	}
	if got := len(s.store.Sets()); got != 1 {
		t.Fatalf("got %d records published, want still 1", got)
	}
}

// An id chosen by the client does the same.
func TestClientChosenIDSetsOneThrottle(t *testing.T) {
	s := newServer(t, admin.Config{Token: token})
	body := strings.Replace(validBody, `{`, `{"id":"ops-2026-03-01-acme",`, 1)
	for i := range 3 {
		r := s.post(t, body, nil)
		if r.status != http.StatusCreated || recordOf(t, r).ID != "ops-2026-03-01-acme" {
			t.Fatalf("attempt %d: got %d %s, want 201 with the client's id", i, r.status, r.body)
		}
	}
	if got := len(s.store.Sets()); got != 1 {
		t.Fatalf("got %d records published, want 1", got)
	}
	r := s.post(t, strings.Replace(validBody, `{`, `{"id":"bad id",`, 1), nil)
	if e := decodeError(t, r); r.status != http.StatusBadRequest || e.Field != "id" {
		t.Fatalf("bad id: got %d %+v, want 400 naming id", r.status, e)
	}
}

// slowTopic is a publisher whose write lands at once but is acknowledged only when
// released, as a broker's acknowledgement can come after the client has gone.
type slowTopic struct {
	*throttlefake.Topic
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *slowTopic) Set(ctx context.Context, r throttle.Record) error {
	if err := s.Topic.Set(context.Background(), r); err != nil {
		return err
	}
	s.once.Do(func() { close(s.started) })
	select {
	case <-s.release:
		return nil
	case <-ctx.Done():
		return ctx.Err() // written, but not acknowledged in time
	}
}

// A client that goes away while its throttle is being written: the write is not cut
// short, and the service counts and logs it as set, which is what happened.
func TestClientGoingAwayDoesNotMisreportAPublishedThrottle(t *testing.T) {
	clk := clocktest.New(now)
	store := &slowTopic{Topic: throttlefake.New(clk.Now), started: make(chan struct{}), release: make(chan struct{})}
	m := metrics.Discard()
	srv := httptest.NewServer(admin.New(store, store, admin.Config{Token: token}, admin.WithClock(clk.Now), admin.WithMetrics(m)).Handler())
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/v1/throttles", strings.NewReader(validBody))
	req.Header.Set("Authorization", "Bearer "+token)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	<-store.started
	cancel() // the client goes away
	<-done
	time.Sleep(50 * time.Millisecond) // the server notices the closed connection
	close(store.release)
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(m.Throttles.WithLabelValues(metrics.ActionSet, metrics.ReasonManual)) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the throttle was published, but the service counted %g sets and %g publish errors",
				testutil.ToFloat64(m.Throttles.WithLabelValues(metrics.ActionSet, metrics.ReasonManual)),
				testutil.ToFloat64(m.PublishErrors.WithLabelValues(metrics.ActionSet)))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := testutil.ToFloat64(m.PublishErrors.WithLabelValues(metrics.ActionSet)); got != 0 {
		t.Fatalf("got %g publish errors for a throttle that was published, want 0", got)
	}
}

// When the write is not acknowledged, the answer says the throttle may still take effect,
// never that it was not published.
func TestUnconfirmedPublishSaysSo(t *testing.T) {
	s := newServer(t, admin.Config{Token: token})
	s.store.FailNext(1)
	r := s.post(t, validBody, map[string]string{admin.HeaderIdempotencyKey: "k-1"})
	e := decodeError(t, r)
	if r.status != http.StatusServiceUnavailable || !strings.Contains(e.Error, "may still take effect") || strings.Contains(e.Error, "not published") {
		t.Fatalf("got %d %q, want 503 saying the throttle may still take effect", r.status, e.Error)
	}
	// The retry with the same key sets it once.
	if r := s.post(t, validBody, map[string]string{admin.HeaderIdempotencyKey: "k-1"}); r.status != http.StatusCreated {
		t.Fatalf("retry: got %d %s, want 201", r.status, r.body)
	}
	if got := len(s.store.Sets()); got != 1 {
		t.Fatalf("got %d records, want 1", got)
	}
}
