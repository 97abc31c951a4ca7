package autothrottle

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/services/platform/event"
	"github.com/sluice-dev/sluice/services/processing/internal/clocktest"
	"github.com/sluice-dev/sluice/services/processing/internal/detect"
	"github.com/sluice-dev/sluice/services/processing/internal/metrics"
	"github.com/sluice-dev/sluice/services/processing/internal/throttlefake"
)

var start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testConfig() Config {
	return Config{
		Detect: detect.Config{
			Window: time.Minute, AgeThreshold: 30 * time.Second, AgeMinEvents: 20, AgeMinShare: 0.25,
			ShareThreshold: 0.5, MinEvents: 100,
		},
		Limit: 20, Window: time.Minute, Duration: 10 * time.Minute, RenewMargin: 2 * time.Minute,
		Mode: throttle.ModeEnforce, InstanceID: "processing-1",
	}
}

type harness struct {
	clk   *clocktest.Clock
	store *throttlefake.Topic
	m     *metrics.Metrics
	ctrl  *Controller
}

func newHarness(t *testing.T, lag time.Duration) *harness {
	t.Helper()
	clk := clocktest.New(start)
	store := throttlefake.New(clk.Now)
	store.SetLag(lag)
	m := metrics.Discard()
	ids := 0
	ctrl, err := New(testConfig(), store, store, WithClock(clk.Now), WithMetrics(m),
		WithIDs(func() string { ids++; return fmt.Sprintf("id-%d", ids) }))
	if err != nil {
		t.Fatal(err)
	}
	ctrl.Assigned([]int{0})
	return &harness{clk: clk, store: store, m: m, ctrl: ctrl}
}

// drive sends events for d of fake time: ten ordinary customers at one event a second,
// and acme at acmeRate (0: silent). Tick runs every second, as in the service.
func (h *harness) drive(d time.Duration, acmeRate int) {
	ctx := context.Background()
	for s := time.Duration(0); s < d; s += time.Second {
		for k := range max(acmeRate, 1) {
			if k == 0 {
				for i := range 10 {
					h.ctrl.Observe(ctx, 0, event.Event{Customer: fmt.Sprintf("other-%d", i), IngestedAt: h.clk.Now()}, true)
				}
			}
			if k < acmeRate {
				h.ctrl.Observe(ctx, 0, event.Event{Customer: "acme", IngestedAt: h.clk.Now()}, true)
			}
			h.clk.Advance(time.Second / time.Duration(max(acmeRate, 1)))
		}
		h.ctrl.Tick(ctx)
	}
}

func (h *harness) count(action, reason string) int {
	return int(testutil.ToFloat64(h.m.Throttles.WithLabelValues(action, reason)))
}

// lags are the table behaviours the controller must cope with: a table that shows a
// write at once, and one that reads it back a few seconds later.
var lags = []struct {
	name string
	lag  time.Duration
}{
	{"table sees writes at once", 0},
	{"table lags the topic by 5s", 5 * time.Second},
}

func TestFloodSetsOneThrottleForTheFlooderOnly(t *testing.T) {
	for _, tt := range lags {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.lag)
			h.drive(2*time.Minute, 20)

			sets := h.store.Sets()
			if len(sets) != 1 {
				t.Fatalf("got %d throttles set (%+v), want 1", len(sets), sets)
			}
			r := sets[0]
			checks := []struct {
				what      string
				got, want any
			}{
				{"customer", r.Customer, "acme"},
				{"limit", r.Limit, int64(20)},
				{"window", r.Window, time.Minute},
				{"duration", r.ExpiresAt.Sub(r.CreatedAt), 10 * time.Minute},
				{"reason kind", r.Reason.Kind, throttle.ReasonAutomatic},
				{"reason metric", r.Reason.Metric, detect.MetricShare},
				{"set by", r.SetBy, "processing-1"},
				{"mode", r.Mode, throttle.ModeEnforce},
				{"id", r.ID, "id-1"},
				{"created at precision", r.CreatedAt, r.CreatedAt.Truncate(time.Millisecond)},
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("%s: got %v, want %v", c.what, c.got, c.want)
				}
			}
			if r.Reason.Value <= 0.5 || r.Reason.Value > 1 {
				t.Errorf("reason value: got %g, want a share above 0.5", r.Reason.Value)
			}
			if r.Reason.Note == "" {
				t.Errorf("reason note: got empty, want the measurement in words")
			}
			if got := h.count(metrics.ActionSet, detect.MetricShare); got != 1 {
				t.Errorf("set counter: got %d, want 1", got)
			}
		})
	}
}

func TestThrottleIsRenewedWhileTheOverloadLasts(t *testing.T) {
	for _, tt := range lags {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.lag)
			h.drive(30*time.Minute, 20)

			sets := h.store.SetsFor("acme")
			// Set within seconds, then renewed every Duration-RenewMargin = 8m: at about
			// 8, 16 and 24 minutes. Not once per event.
			if len(sets) != 4 {
				t.Fatalf("got %d records for acme, want 4 (set + 3 renewals)", len(sets))
			}
			for i := 1; i < len(sets); i++ {
				prev, cur := sets[i-1], sets[i]
				if cur.ID == prev.ID {
					t.Errorf("renewal %d: got id %s again, want a new id", i, cur.ID)
				}
				if !cur.ExpiresAt.After(prev.ExpiresAt) {
					t.Errorf("renewal %d: got expiry %s, want after %s", i, cur.ExpiresAt, prev.ExpiresAt)
				}
				// Renewed once within the margin of expiry, before it expired.
				if left := prev.ExpiresAt.Sub(cur.CreatedAt); left > 2*time.Minute || left <= 0 {
					t.Errorf("renewal %d: got renewed %s before expiry, want within (0, 2m]", i, left)
				}
				if cur.Limit != 20 || cur.ExpiresAt.Sub(cur.CreatedAt) != 10*time.Minute {
					t.Errorf("renewal %d: got limit %d for %s, want 20 for 10m", i, cur.Limit, cur.ExpiresAt.Sub(cur.CreatedAt))
				}
			}
			if got := h.count(metrics.ActionSet, detect.MetricShare); got != 1 {
				t.Errorf("set counter: got %d, want 1", got)
			}
			if got := h.count(metrics.ActionRenewed, detect.MetricShare); got != 3 {
				t.Errorf("renewed counter: got %d, want 3", got)
			}
			if got := len(h.store.Sets()); got != 4 {
				t.Errorf("got %d records in all, want 4: nobody else was throttled", got)
			}
		})
	}
}

func TestThrottleExpiresWhenTheOverloadEnds(t *testing.T) {
	h := newHarness(t, 0)
	h.drive(time.Minute, 20) // the flood
	h.drive(15*time.Minute, 1)

	sets := h.store.Sets()
	if len(sets) != 1 {
		t.Fatalf("got %d records, want 1: no renewal once the overload is over", len(sets))
	}
	if now := h.clk.Now(); sets[0].Active(now) {
		t.Errorf("got throttle active at %s, want expired at %s", now, sets[0].ExpiresAt)
	}
	if got := h.count(metrics.ActionExpired, detect.MetricShare); got != 1 {
		t.Errorf("expired counter: got %d, want 1", got)
	}
	if got := h.store.Lifts(); len(got) != 0 {
		t.Errorf("got lifts %v, want none: the sweeper removes expired throttles", got)
	}
}

func TestOperatorThrottleIsLeftAlone(t *testing.T) {
	h := newHarness(t, 0)
	manual := throttle.Record{
		ID: "op-1", Customer: "acme", Limit: 1000, Window: time.Minute,
		CreatedAt: start, ExpiresAt: start.Add(5 * time.Minute),
		Reason: throttle.Reason{Kind: throttle.ReasonManual, Note: "backfill agreed"}, SetBy: "alice",
	}
	h.store.Put(manual)
	// Into the renewal margin of the operator's throttle: still not touched.
	h.drive(4*time.Minute+30*time.Second, 20)
	if got := h.store.Sets(); len(got) != 0 {
		t.Fatalf("got %d records, want none while an operator's throttle stands", len(got))
	}
	// Once it has expired, the overload that continues is throttled automatically.
	h.drive(time.Minute, 20)
	sets := h.store.SetsFor("acme")
	if len(sets) != 1 || sets[0].Reason.Kind != throttle.ReasonAutomatic || sets[0].CreatedAt.Before(manual.ExpiresAt) {
		t.Errorf("got %+v, want one automatic throttle set after %s", sets, manual.ExpiresAt)
	}
}

func TestAnotherReplicasThrottleIsRenewedNotDuplicated(t *testing.T) {
	h := newHarness(t, 0)
	// Set by the replica that owned acme's partition before a rebalance, expiring soon.
	h.store.Put(throttle.Record{
		ID: "theirs", Customer: "acme", Limit: 20, Window: time.Minute,
		CreatedAt: start.Add(-9 * time.Minute), ExpiresAt: start.Add(time.Minute),
		Reason: throttle.Reason{Kind: throttle.ReasonAutomatic, Metric: detect.MetricShare, Value: 0.9}, SetBy: "processing-0",
	})
	h.drive(2*time.Minute, 20)
	if got := h.count(metrics.ActionRenewed, detect.MetricShare); got != 1 {
		t.Errorf("renewed counter: got %d, want 1", got)
	}
	if got := h.count(metrics.ActionSet, detect.MetricShare); got != 0 {
		t.Errorf("set counter: got %d, want 0", got)
	}
}

func TestFailedPublishIsRetriedAfterABackoffNotPerEvent(t *testing.T) {
	h := newHarness(t, 0)
	h.store.FailNext(3)
	h.drive(time.Minute, 20)

	// About 20 acme events a second are overloaded; attempts are spaced by retryAfter.
	if got := h.store.Calls(); got != 4 {
		t.Errorf("got %d publish attempts, want 4 (3 failures, then success)", got)
	}
	if got := len(h.store.Sets()); got != 1 {
		t.Errorf("got %d records, want 1", got)
	}
	if got := testutil.ToFloat64(h.m.PublishErrors.WithLabelValues(metrics.ActionSet)); got != 3 {
		t.Errorf("publish error counter: got %g, want 3", got)
	}
}

func TestLiftedThrottleIsSetAgainIfTheOverloadContinues(t *testing.T) {
	h := newHarness(t, 0)
	h.drive(time.Minute, 20)
	if err := h.store.Lift(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}
	h.ctrl.Forget("acme")
	h.drive(10*time.Second, 20) // the next window judged

	sets := h.store.SetsFor("acme")
	if len(sets) != 2 {
		t.Fatalf("got %d records for acme, want 2 (set, lifted, set again)", len(sets))
	}
	if got := h.count(metrics.ActionSet, detect.MetricShare); got != 2 {
		t.Errorf("set counter: got %d, want 2", got)
	}
	h.drive(15*time.Minute, 0)
	if got := h.count(metrics.ActionExpired, detect.MetricShare); got != 1 {
		t.Errorf("expired counter: got %d, want 1 (the lifted throttle did not expire)", got)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
	}{
		{"negative limit", func(c *Config) { c.Limit = -1 }},
		{"window not whole ms", func(c *Config) { c.Window = time.Microsecond }},
		{"zero duration", func(c *Config) { c.Duration = 0 }},
		{"margin as long as duration", func(c *Config) { c.RenewMargin = c.Duration }},
		{"no instance id", func(c *Config) { c.InstanceID = "" }},
		{"bad detector config", func(c *Config) { c.Detect.MinEvents = 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			tt.modify(&cfg)
			store := throttlefake.New(time.Now)
			if _, err := New(cfg, store, store); err == nil {
				t.Errorf("got no error, want one")
			}
		})
	}
}

// BenchmarkObserveWhileThrottled is the cost per event of a customer that is flooding
// and already throttled: the common case during an overload.
func BenchmarkObserveWhileThrottled(b *testing.B) {
	clk := clocktest.New(start)
	store := throttlefake.New(clk.Now)
	ctrl, err := New(testConfig(), store, store, WithClock(clk.Now))
	if err != nil {
		b.Fatal(err)
	}
	ctrl.Assigned([]int{0})
	ctx := context.Background()
	ev := event.Event{Customer: "acme"}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		ev.IngestedAt = clk.Now()
		ctrl.Observe(ctx, 0, ev, true)
		if i%100 == 0 {
			clk.Advance(10 * time.Millisecond)
		}
	}
	if len(store.Sets()) == 0 {
		b.Fatal("got no throttle, want acme throttled")
	}
}
