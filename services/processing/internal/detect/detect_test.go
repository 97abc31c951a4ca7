package detect

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/services/processing/internal/clocktest"
)

var start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testConfig() Config {
	return Config{
		Window:         time.Minute,
		AgeThreshold:   30 * time.Second,
		AgeMinEvents:   20,
		AgeMinShare:    0.25,
		ShareThreshold: 0.5,
		MinEvents:      100,
	}
}

// traffic is one customer's events: perSecond of them, each age old when processed.
type traffic struct {
	customer  string
	perSecond int
	age       time.Duration
}

func many(prefix string, n, perSecond int, age time.Duration) []traffic {
	out := make([]traffic, n)
	for i := range out {
		out[i] = traffic{customer: fmt.Sprintf("%s-%02d", prefix, i), perSecond: perSecond, age: age}
	}
	return out
}

// simulate feeds the detector for d of fake time, customers interleaved as they would
// be on a consumer, and returns every signal by customer.
func simulate(t *testing.T, det *Detector, clk *clocktest.Clock, d time.Duration, tr []traffic) map[string][]Signal {
	t.Helper()
	maxRate := 1
	for _, x := range tr {
		maxRate = max(maxRate, x.perSecond)
	}
	step := time.Second / time.Duration(maxRate)
	got := map[string][]Signal{}
	for s := time.Duration(0); s < d; s += time.Second {
		for k := range maxRate {
			for _, x := range tr {
				if k >= x.perSecond {
					continue
				}
				if sig, ok := det.Observe(x.customer, clk.Now().Add(-x.age)); ok {
					if sig.Customer != x.customer {
						t.Fatalf("signal for %q while observing %q", sig.Customer, x.customer)
					}
					got[x.customer] = append(got[x.customer], sig)
				}
			}
			clk.Advance(step)
		}
	}
	return got
}

func TestDetectorFlagsExactlyTheOverloadingCustomer(t *testing.T) {
	fresh, late := time.Second, 2*time.Minute
	tests := []struct {
		name    string
		cfg     func(*Config)
		traffic []traffic
		want    map[string]string // customer → metric of its signals
		// wantValue bounds the figure of the flagged customer's last signal.
		wantMin, wantMax float64
	}{
		{
			name:    "one customer floods among many",
			traffic: append(many("other", 20, 1, fresh), traffic{"acme", 50, fresh}),
			want:    map[string]string{"acme": MetricShare},
			wantMin: 0.70, wantMax: 0.72, // 50 of every 70 events
		},
		{
			name:    "one customer's events are late while the others' are on time",
			traffic: append(many("other", 20, 1, fresh), traffic{"acme", 5, late}),
			want:    map[string]string{"acme": MetricAge},
			wantMin: 119.9, wantMax: 120.1,
		},
		{
			name: "a bystander sharing the flood's lagging partition is spared",
			traffic: append(many("other", 20, 1, fresh),
				traffic{"acme", 20, late}, traffic{"bystander", 1, late}),
			want:    map[string]string{"acme": MetricAge},
			wantMin: 119.9, wantMax: 120.1,
		},
		{
			name:    "the whole pipeline lags: nobody is to blame",
			traffic: append(many("other", 20, 1, late), traffic{"acme", 5, late}),
			want:    map[string]string{},
		},
		{
			name:    "a quiet pipeline does not throttle its only customer",
			traffic: []traffic{{"solo", 1, fresh}},
			want:    map[string]string{},
		},
		{
			name:    "a quiet pipeline does not throttle its only customer, even when late",
			traffic: []traffic{{"solo", 1, late}},
			want:    map[string]string{},
		},
		{
			name:    "busy customers below the share threshold",
			traffic: many("busy", 10, 5, fresh),
			want:    map[string]string{},
		},
		{
			name:    "a trickle of late events is an overload once past AgeMinEvents",
			traffic: append(many("other", 20, 2, fresh), traffic{"trickle", 1, late}), // 60 a minute
			want:    map[string]string{"trickle": MetricAge},
			wantMin: 119.9, wantMax: 120.1,
		},
		{
			name:    "a trickle of late events below AgeMinEvents is not",
			cfg:     func(c *Config) { c.AgeMinEvents = 100 },
			traffic: append(many("other", 20, 2, fresh), traffic{"trickle", 1, late}),
			want:    map[string]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clocktest.New(start)
			cfg := testConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			det, err := New(cfg, clk.Now)
			if err != nil {
				t.Fatal(err)
			}
			got := simulate(t, det, clk, 3*time.Minute, tt.traffic)
			for customer, sigs := range got {
				want, ok := tt.want[customer]
				if !ok {
					t.Errorf("customer %q flagged %d times (first: %s), want never", customer, len(sigs), sigs[0].Note())
					continue
				}
				for _, s := range sigs {
					if s.Metric != want {
						t.Fatalf("customer %q: got metric %q, want %q (%s)", customer, s.Metric, want, s.Note())
					}
				}
				last := sigs[len(sigs)-1]
				if last.Value < tt.wantMin || last.Value > tt.wantMax {
					t.Errorf("customer %q: got value %g, want in [%g, %g]", customer, last.Value, tt.wantMin, tt.wantMax)
				}
			}
			for customer := range tt.want {
				if len(got[customer]) == 0 {
					t.Errorf("customer %q: got no signal, want %s", customer, tt.want[customer])
				}
			}
		})
	}
}

func TestDetectorStopsFlaggingWhenTheFloodEnds(t *testing.T) {
	clk := clocktest.New(start)
	cfg := testConfig()
	det, err := New(cfg, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	others := many("other", 20, 1, time.Second)
	flood := simulate(t, det, clk, time.Minute, append(others, traffic{"acme", 50, time.Second}))
	if len(flood["acme"]) == 0 {
		t.Fatalf("got no signal during the flood, want some")
	}
	floodEnd := clk.Now()

	// After the flood acme sends like everyone else. Record when it was last flagged.
	var lastFlagged time.Time
	normal := append(others, traffic{"acme", 1, time.Second})
	for range 180 {
		if sigs := simulate(t, det, clk, time.Second, normal)["acme"]; len(sigs) > 0 {
			lastFlagged = clk.Now()
		}
	}
	// The window slides by Window/slots: the flood is out of it by Window + one slot.
	if limit := floodEnd.Add(cfg.Window + cfg.Window/slots + time.Second); lastFlagged.After(limit) {
		t.Errorf("got acme flagged at %s, want not after %s", lastFlagged.Sub(start), limit.Sub(start))
	}
}

func TestDetectorForgetsIdleCustomers(t *testing.T) {
	clk := clocktest.New(start)
	det, err := New(testConfig(), clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		det.Observe(fmt.Sprintf("c%d", i), clk.Now())
	}
	if got := det.Customers(); got != 100 {
		t.Fatalf("got %d customers tracked, want 100", got)
	}
	clk.Advance(3 * time.Minute)
	det.Observe("late-comer", clk.Now())
	if got := det.Customers(); got != 1 {
		t.Errorf("got %d customers tracked after two idle windows, want 1", got)
	}
}

func TestDetectorToleratesClockSkew(t *testing.T) {
	clk := clocktest.New(start)
	det, err := New(testConfig(), clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	// Events stamped in the future (ingestion's clock ahead) count as age zero, and a
	// clock that steps back does not corrupt the counts.
	for range 200 {
		det.Observe("acme", clk.Now().Add(time.Hour))
	}
	clk.Advance(-10 * time.Second)
	sig, ok := det.Observe("acme", clk.Now())
	if !ok || sig.Metric != MetricShare || sig.TotalEvents != 201 || sig.Late != 0 {
		t.Errorf("got %+v, %v; want a share signal over 201 events, none late", sig, ok)
	}
}

func TestSignalNote(t *testing.T) {
	tests := []struct {
		sig  Signal
		want []string
	}{
		{Signal{Metric: MetricShare, Value: 0.75, Events: 600, TotalEvents: 800, Window: time.Minute, Threshold: 0.5},
			[]string{"75.0%", "800 events", "1m0s", "50%"}},
		{Signal{Metric: MetricAge, Value: 121.5, Events: 40, Late: 39, Window: time.Minute, Threshold: 30},
			[]string{"121.5s", "30s", "39 of", "40 events"}},
	}
	for _, tt := range tests {
		got := tt.sig.Note()
		for _, w := range tt.want {
			if !strings.Contains(got, w) {
				t.Errorf("got note %q, want it to contain %q", got, w)
			}
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"window too short", func(c *Config) { c.Window = time.Millisecond }, "window"},
		{"age threshold zero", func(c *Config) { c.AgeThreshold = 0 }, "age threshold"},
		{"age min events zero", func(c *Config) { c.AgeMinEvents = 0 }, "age min events"},
		{"age min share above one", func(c *Config) { c.AgeMinShare = 1.5 }, "age min share"},
		{"share threshold zero", func(c *Config) { c.ShareThreshold = 0 }, "share threshold"},
		{"share threshold NaN", func(c *Config) { c.ShareThreshold = math.NaN() }, "share threshold"},
		{"min events zero", func(c *Config) { c.MinEvents = 0 }, "min events"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			tt.modify(&cfg)
			_, err := New(cfg, time.Now)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %v, want one naming %q", err, tt.want)
			}
		})
	}
}

// BenchmarkObserve is the detector's cost per event on the hot path: 1000 customers, one
// of them flooding.
func BenchmarkObserve(b *testing.B) {
	clk := clocktest.New(start)
	det, err := New(testConfig(), clk.Now)
	if err != nil {
		b.Fatal(err)
	}
	names := make([]string, 1000)
	for i := range names {
		names[i] = fmt.Sprintf("c%04d", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		name := names[i%len(names)]
		if i%2 == 0 {
			name = "acme"
		}
		det.Observe(name, clk.Now())
		if i%100 == 0 {
			clk.Advance(10 * time.Millisecond)
		}
	}
}
