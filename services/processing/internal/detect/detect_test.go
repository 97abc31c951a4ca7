package detect

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
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
		Lateness:       2 * time.Second,
	}
}

// ev is one event as ingestion wrote it.
type ev struct {
	part     int
	customer string
	at       time.Time // ingestion time
}

// burst writes, over span ending at end, perSecond events a second for each customer;
// customer i lives on partition i%partitions. Per partition the events are in
// ingestion order, as in the log.
func burst(end time.Time, span time.Duration, partitions int, perSecond map[string]int) map[int][]ev {
	logs := map[int][]ev{}
	names := make([]string, 0, len(perSecond))
	for name := range perSecond {
		names = append(names, name)
	}
	for i := range names {
		names[i] = fmt.Sprintf("c%03d", i)
	}
	i := 0
	for name, rate := range perSecond {
		p := i % partitions
		i++
		for s := end.Add(-span); s.Before(end); s = s.Add(time.Second / time.Duration(rate)) {
			logs[p] = append(logs[p], ev{p, name, s})
		}
	}
	for _, l := range logs { // ingestion order within a partition
		slices.SortStableFunc(l, func(a, b ev) int { return a.at.Compare(b.at) })
	}
	return logs
}

// read feeds the detector the logs in the order pick chooses (any interleaving of the
// partitions that keeps each partition's order), processing at rate events/s from now
// on, and returns every signal. Partitions read to their end say so.
func read(d *Detector, logs map[int][]ev, now time.Time, rate int, pick func(open []int) int) ([]Signal, time.Time) {
	pos := map[int]int{}
	var out []Signal
	step := time.Second / time.Duration(rate)
	for {
		var open []int
		for p := range len(logs) + 8 {
			if pos[p] < len(logs[p]) {
				open = append(open, p)
			}
		}
		if len(open) == 0 {
			break
		}
		p := pick(open)
		e := logs[p][pos[p]]
		pos[p]++
		if e.at.After(now) {
			now = e.at // nothing is read before it is ingested
		}
		out = append(out, d.Observe(p, e.customer, e.at, now, pos[p] == len(logs[p]))...)
		now = now.Add(step)
	}
	for range 20 { // caught up: the clock moves on
		now = now.Add(time.Second)
		out = append(out, d.Tick(now)...)
	}
	return out, now
}

func partitionsOf(logs map[int][]ev, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func equalCustomers(n, perSecond int) map[string]int {
	m := map[string]int{}
	for i := range n {
		m[fmt.Sprintf("equal-%02d", i)] = perSecond
	}
	return m
}

// Orders in which a lagging replica may read its partitions.
var orders = map[string]func(r *rand.Rand) func(open []int) int{
	"one partition after another": func(*rand.Rand) func([]int) int { return func(open []int) int { return open[0] } },
	"last partition first":        func(*rand.Rand) func([]int) int { return func(open []int) int { return open[len(open)-1] } },
	"random interleaving":         func(r *rand.Rand) func([]int) int { return func(open []int) int { return open[r.IntN(len(open))] } },
}

// Equal customers, a burst read 40s behind by a replica that lags, in any read order:
// no one is flagged. Counting in read order flags whichever partition is read first.
func TestEqualCustomersAreNeverFlagged(t *testing.T) {
	const partitions = 6
	for name, order := range orders {
		seeds := uint64(1)
		if name == "random interleaving" {
			seeds = 20
		}
		for seed := range seeds {
			t.Run(fmt.Sprintf("%s/seed-%d", name, seed), func(t *testing.T) {
				d, err := New(testConfig())
				if err != nil {
					t.Fatal(err)
				}
				d.Assigned(partitionsOf(nil, partitions))
				logs := burst(start, 90*time.Second, partitions, equalCustomers(24, 20))
				// Processing starts 40s after the burst began: a backlog of 40s and more.
				sigs, _ := read(d, logs, start.Add(-50*time.Second), 400, order(rand.New(rand.NewPCG(seed, 1))))
				if len(sigs) > 0 {
					t.Fatalf("got %d signals, first %+v; want none for equal customers", len(sigs), sigs[0])
				}
			})
		}
	}
}

// One customer sends 60% of the traffic: it, and only it, is flagged, whatever the read
// order, by the time the first window that holds its flood is judged.
func TestTheCustomerAtFaultIsFlaggedAlone(t *testing.T) {
	const partitions = 6
	for name, order := range orders {
		t.Run(name, func(t *testing.T) {
			d, err := New(testConfig())
			if err != nil {
				t.Fatal(err)
			}
			d.Assigned(partitionsOf(nil, partitions))
			rates := equalCustomers(20, 2)
			rates["acme"] = 60 // 60 of 100 events a second
			logs := burst(start, 90*time.Second, partitions, rates)
			sigs, _ := read(d, logs, start.Add(-60*time.Second), 400, order(rand.New(rand.NewPCG(7, 1))))
			if len(sigs) == 0 {
				t.Fatal("got no signal, want acme flagged")
			}
			// Read at random, acme's partition falls behind the others: it may be flagged by
			// the age of its events before its share.
			for _, s := range sigs {
				if s.Customer != "acme" {
					t.Fatalf("got %+v, want acme alone", s)
				}
				if s.Metric == MetricShare && (s.Value < 0.55 || s.Value > 0.65) {
					t.Fatalf("got %+v, want a share near 60%%", s)
				}
			}
			// The bound: the first window judged ends one slot after the burst began.
			if first := sigs[0].WindowEnd; first.After(start.Add(-90*time.Second + 2*time.Minute/slots)) {
				t.Errorf("first signal for the window ending %s, want by %s", first, start.Add(-90*time.Second+2*time.Minute/slots))
			}
		})
	}
}

// A rebalance in the middle of the burst: the replica owned partitions 0-2, then owns
// 3-5 and starts them from where another replica committed. No false signal, and the
// customer at fault on the new partitions is still flagged.
func TestRebalanceMakesNoFalseSignal(t *testing.T) {
	const partitions = 6
	d, err := New(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	rates := equalCustomers(23, 2)
	rates["acme"] = 70
	logs := burst(start, 120*time.Second, partitions, rates)
	var acmePart int
	for p, l := range logs {
		for _, e := range l {
			if e.customer == "acme" {
				acmePart = p
			}
		}
	}
	// Before: the replica owns the three partitions without acme and reads half of them.
	var mine, theirs []int
	for p := range partitions {
		if (p < 3) == (acmePart >= 3) {
			mine = append(mine, p)
		} else {
			theirs = append(theirs, p)
		}
	}
	d.Assigned(mine)
	now := start.Add(-70 * time.Second)
	half := map[int][]ev{}
	for _, p := range mine {
		half[p] = logs[p][:len(logs[p])/2]
	}
	r := rand.New(rand.NewPCG(3, 3))
	var sigs []Signal
	for len(half[mine[0]])+len(half[mine[1]])+len(half[mine[2]]) > 0 {
		p := mine[r.IntN(3)]
		if len(half[p]) == 0 {
			continue
		}
		e := half[p][0]
		half[p] = half[p][1:]
		sigs = append(sigs, d.Observe(p, e.customer, e.at, now, false)...)
		now = now.Add(time.Millisecond)
	}
	if len(sigs) > 0 {
		t.Fatalf("before the rebalance: got %+v, want no signal", sigs[0])
	}
	// After: it owns the other three, from the middle of their logs (the rest was
	// processed by the replica that owned them), interleaved at random.
	d.Assigned(theirs)
	rest := map[int][]ev{}
	for i, p := range theirs {
		rest[i] = logs[p][len(logs[p])/3:]
	}
	renamed := map[int]int{0: theirs[0], 1: theirs[1], 2: theirs[2]}
	pos := map[int]int{}
	for {
		var open []int
		for i := range 3 {
			if pos[i] < len(rest[i]) {
				open = append(open, i)
			}
		}
		if len(open) == 0 {
			break
		}
		i := open[r.IntN(len(open))]
		e := rest[i][pos[i]]
		pos[i]++
		sigs = append(sigs, d.Observe(renamed[i], e.customer, e.at, now, pos[i] == len(rest[i]))...)
		now = now.Add(time.Millisecond)
	}
	for range 20 {
		now = now.Add(time.Second)
		sigs = append(sigs, d.Tick(now)...)
	}
	if len(sigs) == 0 {
		t.Fatal("after the rebalance: got no signal, want acme flagged")
	}
	for _, s := range sigs {
		if s.Customer != "acme" {
			t.Fatalf("after the rebalance: got %+v, want acme only", s)
		}
	}
	// Events fetched from a partition given away count for nothing.
	if got := d.Observe(mine[0], "stray", now, now, false); len(got) != 0 || d.Dropped() == 0 {
		t.Fatalf("event of a partition not owned: got %v, dropped %d", got, d.Dropped())
	}
}

// A partition that has shown nothing holds every window back; once it is idle, windows
// from then on are judged (its events before were handled before: windows are cut there).
func TestASilentPartitionHoldsTheWatermark(t *testing.T) {
	d, err := New(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	d.Assigned([]int{0, 1})
	flood := func(from time.Time) (sigs []Signal) {
		for i := range 3000 { // 50 a second for a minute, processed as ingested
			at := from.Add(time.Duration(i) * 20 * time.Millisecond)
			sigs = append(sigs, d.Observe(0, "acme", at, at, true)...)
		}
		return sigs
	}
	if sigs := append(flood(start), d.Tick(start.Add(2*time.Minute))...); len(sigs) != 0 {
		t.Fatalf("got %d signals while partition 1 showed nothing, want none", len(sigs))
	}
	d.Idle(1, start.Add(2*time.Minute))
	sigs := append(flood(start.Add(2*time.Minute)), d.Tick(start.Add(4*time.Minute))...)
	if len(sigs) == 0 || sigs[0].Customer != "acme" {
		t.Fatalf("got %v once partition 1 is idle, want acme (alone on the pipeline, above MinEvents)", sigs)
	}
}

// The age rule keeps its meaning (age is now minus ingestion time): a customer whose
// events wait while everyone else's are on time is flagged by age.
func TestAgeRule(t *testing.T) {
	d, err := New(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	d.Assigned([]int{0, 1})
	var sigs []Signal
	now := start
	for s := range 120 {
		now = start.Add(time.Duration(s) * time.Second)
		for i := range 10 {
			sigs = append(sigs, d.Observe(0, fmt.Sprintf("on-time-%d", i), now.Add(-time.Second), now, true)...)
		}
		sigs = append(sigs, d.Observe(1, "slow", now.Add(-45*time.Second), now, false)...)
	}
	var age []Signal
	for _, s := range sigs {
		if s.Customer != "slow" {
			t.Fatalf("got %+v, want only the slow customer", s)
		}
		if s.Metric == MetricAge {
			age = append(age, s)
		}
	}
	if len(age) == 0 || age[0].Value < 44 || age[0].Value > 46 {
		t.Fatalf("got age signals %+v, want the slow customer at a median age of 45s", age)
	}
}

// Ingestion clocks ahead of processing's do not carry the watermark into the future.
func TestFutureTimestampsDoNotCloseOpenWindows(t *testing.T) {
	d, err := New(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	d.Assigned([]int{0})
	d.Observe(0, "skewed", start.Add(time.Hour), start, false)
	before := d.Dropped()
	for i := range 200 {
		d.Observe(0, fmt.Sprintf("c%d", i%20), start.Add(time.Duration(i)*10*time.Millisecond), start.Add(3*time.Second), false)
	}
	if d.Dropped() != before {
		t.Fatalf("got %d events dropped after a future timestamp, want 0", d.Dropped()-before)
	}
}

func TestSignalNote(t *testing.T) {
	end := time.Date(2026, 3, 1, 12, 1, 0, 0, time.UTC)
	tests := []struct {
		sig  Signal
		want []string
	}{
		{Signal{Metric: MetricShare, Value: 0.75, Events: 600, TotalEvents: 800, Window: time.Minute, WindowEnd: end, Threshold: 0.5},
			[]string{"75.0%", "800 events", "1m0s", "50%", "2026-03-01T12:01:00Z"}},
		{Signal{Metric: MetricAge, Value: 121.5, Events: 40, Late: 39, Window: time.Minute, WindowEnd: end, Threshold: 30},
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
		{"lateness negative", func(c *Config) { c.Lateness = -time.Second }, "lateness"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			tt.modify(&cfg)
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %v, want one naming %q", err, tt.want)
			}
		})
	}
}

// BenchmarkObserve is the detector's cost per event on the hot path: 1000 customers on
// 6 partitions, one of them flooding, processed as they are ingested.
func BenchmarkObserve(b *testing.B) {
	d, err := New(testConfig())
	if err != nil {
		b.Fatal(err)
	}
	d.Assigned([]int{0, 1, 2, 3, 4, 5})
	names := make([]string, 1000)
	for i := range names {
		names[i] = fmt.Sprintf("c%04d", i)
	}
	now := start
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		name := names[i%len(names)]
		if i%2 == 0 {
			name = "acme"
		}
		d.Observe(i%6, name, now, now, true)
		if i%100 == 0 {
			now = now.Add(10 * time.Millisecond)
		}
	}
}
