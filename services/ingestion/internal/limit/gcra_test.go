package limit

import (
	"testing"
	"time"
)

var t0 = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

func TestTakeBurstThenRefill(t *testing.T) {
	l := NewLimiter()
	q := Quota{Q: 20, W: time.Minute}
	for i := range 20 {
		r := l.Take("acme", "th1", q, 1, t0)
		if !r.Allowed {
			t.Fatalf("event %d: refused, want allowed (a full bucket holds 20)", i+1)
		}
		if want := int64(19 - i); r.Remaining != want {
			t.Fatalf("event %d: remaining %d, want %d", i+1, r.Remaining, want)
		}
	}
	r := l.Take("acme", "th1", q, 1, t0)
	want := Result{Allowed: false, Remaining: 0, Reset: time.Minute, RetryAfter: 3 * time.Second}
	if r != want {
		t.Fatalf("21st event: got %+v, want %+v", r, want)
	}
	// One event every window/q = 3s comes back, and only one.
	if r := l.Take("acme", "th1", q, 1, t0.Add(3*time.Second-time.Nanosecond)); r.Allowed {
		t.Fatalf("just before 3s: allowed, want refused")
	}
	if r := l.Take("acme", "th1", q, 1, t0.Add(3*time.Second)); !r.Allowed {
		t.Fatalf("at 3s: refused, want allowed")
	}
	if r := l.Take("acme", "th1", q, 1, t0.Add(3*time.Second)); r.Allowed {
		t.Fatalf("second event at 3s: allowed, want refused")
	}
}

func TestTakeIsAllOrNothing(t *testing.T) {
	l := NewLimiter()
	q := Quota{Q: 10, W: 10 * time.Second}
	if r := l.Take("acme", "th1", q, 5, t0); !r.Allowed || r.Remaining != 5 {
		t.Fatalf("5 of 10: got %+v, want allowed with 5 remaining", r)
	}
	r := l.Take("acme", "th1", q, 6, t0)
	if r.Allowed {
		t.Fatalf("6 with 5 left: allowed, want refused")
	}
	if r.Remaining != 5 {
		t.Fatalf("after a refusal: remaining %d, want 5 (a refusal charges nothing)", r.Remaining)
	}
	if r.RetryAfter != time.Second {
		t.Fatalf("retry after %s, want 1s (one more event refills in 1s)", r.RetryAfter)
	}
	if r := l.Take("acme", "th1", q, 5, t0); !r.Allowed || r.Remaining != 0 {
		t.Fatalf("5 with 5 left: got %+v, want allowed with 0 remaining", r)
	}
}

func TestTakeMoreThanQuotaNeverFits(t *testing.T) {
	l := NewLimiter()
	q := Quota{Q: 10, W: 10 * time.Second}
	l.Take("acme", "th1", q, 4, t0)
	r := l.Take("acme", "th1", q, 11, t0)
	if r.Allowed {
		t.Fatal("11 events against a quota of 10: allowed, want refused")
	}
	if r.RetryAfter != r.Reset || r.Reset != 4*time.Second {
		t.Fatalf("got retry after %s, reset %s; want both 4s (when the bucket is full)", r.RetryAfter, r.Reset)
	}
}

// TestNoDoubleBurstAtWindowBoundary is the case a fixed window gets wrong: a client
// spends its quota just before a window boundary and again just after it. A fixed window
// admits 2q in those two milliseconds; GCRA admits the first q and then one event per
// window/q.
func TestNoDoubleBurstAtWindowBoundary(t *testing.T) {
	l := NewLimiter()
	q := Quota{Q: 20, W: time.Minute}
	before := t0.Add(time.Minute - time.Millisecond)
	after := t0.Add(time.Minute + time.Millisecond)
	admitted := 0
	for range 20 {
		if l.Take("acme", "th1", q, 1, before).Allowed {
			admitted++
		}
	}
	for range 20 {
		if l.Take("acme", "th1", q, 1, after).Allowed {
			admitted++
		}
	}
	if admitted != 20 {
		t.Fatalf("admitted %d in 2ms around a window boundary, want 20 (a fixed window would admit 40)", admitted)
	}
}

// TestSmoothUnderSustainedDemand offers far more than the quota for ten windows and
// checks the long-run rate and that no window-long interval admits 2q or more.
func TestSmoothUnderSustainedDemand(t *testing.T) {
	l := NewLimiter()
	q := Quota{Q: 20, W: time.Minute}
	var times []time.Time
	end := t0.Add(10 * time.Minute)
	for now := t0; now.Before(end); now = now.Add(100 * time.Millisecond) {
		for range 5 { // 50 events/s offered, 1/3 event/s allowed
			if l.Take("acme", "th1", q, 1, now).Allowed {
				times = append(times, now)
			}
		}
	}
	// A full bucket at the start, then one every 3s.
	if want := 20 + 200 - 1; len(times) < want-1 || len(times) > want+1 {
		t.Fatalf("admitted %d in 10 windows, want about %d (20 burst + 1 per 3s)", len(times), want)
	}
	for i := range times {
		j := i
		for j < len(times) && times[j].Sub(times[i]) < time.Minute {
			j++
		}
		if n := j - i; n >= 2*20 {
			t.Fatalf("%d events admitted within one window from %s, want fewer than %d", n, times[i].Sub(t0), 2*20)
		}
	}
	// After the initial burst, admissions are evenly spaced by window/q.
	for i := 21; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap != 3*time.Second {
			t.Fatalf("gap between admissions %d and %d is %s, want 3s", i-1, i, gap)
		}
	}
}

func TestNewThrottleIDResetsState(t *testing.T) {
	l := NewLimiter()
	q := Quota{Q: 2, W: time.Minute}
	l.Take("acme", "th1", q, 2, t0)
	if l.Take("acme", "th1", q, 1, t0).Allowed {
		t.Fatal("th1 exhausted: allowed, want refused")
	}
	if r := l.Take("acme", "th2", q, 1, t0); !r.Allowed || r.Remaining != 1 {
		t.Fatalf("new throttle th2: got %+v, want allowed with 1 remaining (a fresh bucket)", r)
	}
	if !l.Take("other", "th1", q, 2, t0).Allowed {
		t.Fatal("another customer: refused, want allowed (state is per customer)")
	}
}

func TestRefund(t *testing.T) {
	l := NewLimiter()
	q := Quota{Q: 3, W: 3 * time.Second}
	l.Take("acme", "th1", q, 3, t0)
	l.Refund("acme", "th1", q, 2)
	if r := l.Take("acme", "th1", q, 2, t0); !r.Allowed {
		t.Fatalf("after refunding 2: got %+v, want 2 allowed", r)
	}
	l.Refund("acme", "other-id", q, 3) // another throttle's refund does nothing
	if r := l.Take("acme", "th1", q, 1, t0); r.Allowed {
		t.Fatal("refund under another throttle id gave quota back")
	}
}

func TestShrinkingQuotaNeverReportsNegativeRemaining(t *testing.T) {
	l := NewLimiter()
	l.Take("acme", "th1", Quota{Q: 30, W: time.Minute}, 30, t0)
	r := l.Take("acme", "th1", Quota{Q: 10, W: time.Minute}, 1, t0) // two replicas joined
	if r.Allowed || r.Remaining != 0 {
		t.Fatalf("got %+v, want refused with 0 remaining", r)
	}
}

func TestForgetFullForgetsOnlyFullBuckets(t *testing.T) {
	l := NewLimiter()
	q := Quota{Q: 10, W: 10 * time.Second}
	l.Take("a", "th", q, 10, t0)
	l.Take("b", "th", q, 1, t0)
	if n := l.ForgetFull(t0.Add(time.Second)); n != 1 || l.Len() != 1 {
		t.Fatalf("ForgetFull at 1s removed %d, kept %d; want 1 removed (b is full again), 1 kept", n, l.Len())
	}
	if r := l.Take("a", "th", q, 1, t0.Add(time.Second)); !r.Allowed || r.Remaining != 0 {
		t.Fatalf("a after ForgetFull: got %+v, want its debt kept (1 allowed, 0 remaining)", r)
	}
}

func TestIntervalRoundsUp(t *testing.T) {
	tests := []struct {
		q    Quota
		want int64
	}{
		{Quota{Q: 20, W: time.Minute}, int64(3 * time.Second)},
		{Quota{Q: 3, W: 10}, 4},    // 10/3 rounded up: never more than q per window
		{Quota{Q: 1000, W: 10}, 1}, // at least 1ns
		{Quota{Q: 7, W: 7 * time.Hour}, int64(time.Hour)},
	}
	for _, tt := range tests {
		if got, _ := tt.q.interval(); int64(got) != tt.want {
			t.Errorf("interval of %+v: got %d, want %d", tt.q, got, tt.want)
		}
	}
}

func BenchmarkTake(b *testing.B) {
	l := NewLimiter()
	q := Quota{Q: 1 << 40, W: time.Second}
	now := time.Now()
	l.Take("customer-42", "th1", q, 1, now)
	b.ReportAllocs()
	for b.Loop() {
		l.Take("customer-42", "th1", q, 1, now)
	}
}

func BenchmarkTakeParallel(b *testing.B) {
	l := NewLimiter()
	q := Quota{Q: 1 << 40, W: time.Second}
	customers := make([]string, 1024)
	for i := range customers {
		customers[i] = "customer-" + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676))
		l.Take(customers[i], "th1", q, 1, time.Now())
	}
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.Take(customers[i&1023], "th1", q, 1, now)
			i++
		}
	})
}
