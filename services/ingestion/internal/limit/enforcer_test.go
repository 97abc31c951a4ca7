package limit

import (
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

type fakeTable map[string]throttle.Record

func (f fakeTable) Lookup(c string) (throttle.Rule, bool) {
	r, ok := f[c]
	return r.Rule(), ok
}

type fakeFleet struct {
	alive int
	known bool
}

func (f *fakeFleet) Size() (int, bool) { return f.alive, f.known }

func record(customer, id string, limit int64, window time.Duration, mode throttle.Mode) throttle.Record {
	return throttle.Record{ID: id, Customer: customer, Limit: limit, Window: window, Mode: mode,
		CreatedAt: t0.Add(-time.Minute), ExpiresAt: t0.Add(10 * time.Minute)}
}

func TestShare(t *testing.T) {
	tests := []struct {
		limit int64
		alive int
		known bool
		want  int64
	}{
		{20, 1, true, 20},
		{20, 2, true, 10},
		{20, 3, true, 7}, // rounded up: 3 × 7 = 21 ≥ 20
		{20, 4, true, 5},
		{2, 3, true, 1}, // never below one event per window
		{1, 50, true, 1},
		{0, 3, true, 0}, // limit 0 refuses everything, whatever the fleet
		{0, 0, false, 0},
		{20, 3, false, 20}, // unknown fleet: the full limit
		{20, 0, true, 20},
	}
	for _, tt := range tests {
		if got := Share(tt.limit, tt.alive, tt.known); got != tt.want {
			t.Errorf("Share(%d, %d, %t) = %d, want %d", tt.limit, tt.alive, tt.known, got, tt.want)
		}
	}
}

func TestDecide(t *testing.T) {
	throttles := fakeTable{
		"enforced": record("enforced", "th1", 4, time.Minute, throttle.ModeEnforce),
		"shadow":   record("shadow", "th2", 4, time.Minute, throttle.ModeShadow),
		"zero":     record("zero", "th3", 0, time.Minute, throttle.ModeEnforce),
	}
	tests := []struct {
		name     string
		customer string
		fleet    fakeFleet
		verdicts []Verdict // one request of one event each, at t0
	}{
		{"unthrottled", "free", fakeFleet{1, true}, []Verdict{Unthrottled, Unthrottled}},
		{"enforced alone", "enforced", fakeFleet{1, true}, []Verdict{Allowed, Allowed, Allowed, Allowed, Rejected}},
		{"enforced among two", "enforced", fakeFleet{2, true}, []Verdict{Allowed, Allowed, Rejected}},
		{"fleet unknown: full limit", "enforced", fakeFleet{0, false}, []Verdict{Allowed, Allowed, Allowed, Allowed, Rejected}},
		{"shadow counts but never rejects", "shadow", fakeFleet{1, true}, []Verdict{Allowed, Allowed, Allowed, Allowed, ShadowRejected, ShadowRejected}},
		{"limit 0 refuses all", "zero", fakeFleet{1, true}, []Verdict{Rejected, Rejected}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEnforcer(throttles, &tt.fleet, NewLimiter())
			for i, want := range tt.verdicts {
				if got := e.Decide(tt.customer, 1, t0).Verdict; got != want {
					t.Fatalf("request %d: got %s, want %s", i+1, got, want)
				}
			}
		})
	}
}

func TestDecideLimitZeroRetriesAtExpiry(t *testing.T) {
	e := NewEnforcer(fakeTable{"zero": record("zero", "th", 0, time.Minute, throttle.ModeEnforce)}, nil, NewLimiter())
	d := e.Decide("zero", 1, t0)
	if d.Verdict != Rejected || d.RetryAfter != 10*time.Minute || d.Quota.Q != 0 {
		t.Fatalf("got %+v, want rejected, quota 0, retry after 10m (the throttle's expiry)", d)
	}
}

func TestDecideFollowsFleetChanges(t *testing.T) {
	f := &fakeFleet{alive: 1, known: true}
	e := NewEnforcer(fakeTable{"c": record("c", "th", 60, time.Minute, throttle.ModeEnforce)}, f, NewLimiter())
	if d := e.Decide("c", 1, t0); d.Quota.Q != 60 {
		t.Fatalf("alone: quota %d, want 60", d.Quota.Q)
	}
	f.alive = 3
	if d := e.Decide("c", 1, t0); d.Quota.Q != 20 {
		t.Fatalf("three replicas: quota %d, want 20", d.Quota.Q)
	}
	f.alive, f.known = 0, false
	if d := e.Decide("c", 1, t0); d.Quota.Q != 60 {
		t.Fatalf("fleet unknown: quota %d, want 60", d.Quota.Q)
	}
}

func TestRefundAfterAllowed(t *testing.T) {
	e := NewEnforcer(fakeTable{"c": record("c", "th", 2, time.Minute, throttle.ModeEnforce)}, nil, NewLimiter())
	d := e.Decide("c", 2, t0)
	if d.Verdict != Allowed {
		t.Fatalf("got %s, want allowed", d.Verdict)
	}
	e.Refund(d, 2)
	if d := e.Decide("c", 2, t0); d.Verdict != Allowed {
		t.Fatalf("after a refund: got %s, want allowed", d.Verdict)
	}
}

// BenchmarkDecide is the whole per-request decision for a throttled customer: table
// lookup (a map here), fleet size, GCRA.
func BenchmarkDecide(b *testing.B) {
	rec := record("acme", "th1", 1<<40, time.Second, throttle.ModeEnforce)
	rec.ExpiresAt = time.Now().Add(time.Hour)
	e := NewEnforcer(fakeTable{"acme": rec}, &fakeFleet{alive: 3, known: true}, NewLimiter())
	now := time.Now()
	e.Decide("acme", 1, now)
	b.ReportAllocs()
	for b.Loop() {
		e.Decide("acme", 1, now)
	}
}
