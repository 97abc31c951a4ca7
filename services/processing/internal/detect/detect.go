// Package detect decides whether a customer overloads the pipeline, judging windows of
// event time: the ingestion timestamp every event carries.
//
// Processing reads its partitions in whatever order the broker serves them, and lags
// when the pipeline is busy. Counting events as they are read would take read order for
// a customer's share: a partition's backlog would look like its customers flooding. So
// events are counted in slots of ingestion time, and a window is judged only once every
// partition this replica owns has passed its end (the watermark). A partition that has
// been read to its end passes any time up to now minus Lateness, the time an event may
// take from its ingestion timestamp to the log.
//
// A Detector is pure: it reads time only from its callers and keeps everything in
// memory, so tests drive it with any interleaving; the processing service owns when and
// how a finding becomes a throttle (package autothrottle).
package detect

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// The metrics a Signal reports, as written in throttle.Reason.Metric.
const (
	// MetricAge: the customer's median event age when processed, in seconds.
	MetricAge = "event_age_seconds"
	// MetricShare: the customer's fraction (0..1) of the events in the window.
	MetricShare = "traffic_share"
)

// slots is how many slots a window is cut into: a window is judged every window/slots
// of event time, which notices a flood within seconds.
const slots = 12

// ageSamples bounds the ages kept per customer and slot to report the median age. The
// decision itself uses exact counts; the samples only give the figure.
const ageSamples = 16

// DefaultLateness is Config.Lateness when it is zero.
const DefaultLateness = 2 * time.Second

// Config sets the rules. See New for the constraints.
type Config struct {
	// Window is the span of ingestion time both rules look back over (a sliding window).
	Window time.Duration

	// AgeThreshold: an event older than this when processed is late.
	AgeThreshold time.Duration
	// AgeMinEvents: a customer needs at least this many events in the window before its
	// age is judged; one late event is not an overload.
	AgeMinEvents int
	// AgeMinShare: the customer must account for at least this fraction of the late
	// events. Events are partitioned by customer, so customers that share a partition
	// with a flood are late too; they are bystanders, and their share of the late events
	// is small.
	AgeMinShare float64

	// ShareThreshold: a customer that sent more than this fraction of the window's events
	// overloads the pipeline...
	ShareThreshold float64
	// MinEvents: ...once the window holds at least this many events, so a quiet pipeline
	// does not throttle its only customer.
	MinEvents int

	// Lateness is how long after its ingestion timestamp an event may still reach the
	// log (default DefaultLateness). A partition read to its end holds the watermark at
	// now minus Lateness; an event that comes later than that is not counted.
	Lateness time.Duration
}

func (c Config) validate() error {
	var errs []error
	if c.Window < slots*time.Millisecond {
		errs = append(errs, fmt.Errorf("window %s is shorter than %dms", c.Window, slots))
	}
	if c.AgeThreshold <= 0 {
		errs = append(errs, fmt.Errorf("age threshold %s is not positive", c.AgeThreshold))
	}
	if c.AgeMinEvents < 1 {
		errs = append(errs, fmt.Errorf("age min events %d is less than 1", c.AgeMinEvents))
	}
	// Written so that NaN fails too.
	if !(c.AgeMinShare >= 0 && c.AgeMinShare <= 1) {
		errs = append(errs, fmt.Errorf("age min share %g is not in [0, 1]", c.AgeMinShare))
	}
	if !(c.ShareThreshold > 0 && c.ShareThreshold <= 1) {
		errs = append(errs, fmt.Errorf("share threshold %g is not in (0, 1]", c.ShareThreshold))
	}
	if c.MinEvents < 1 {
		errs = append(errs, fmt.Errorf("min events %d is less than 1", c.MinEvents))
	}
	if c.Lateness < 0 {
		errs = append(errs, fmt.Errorf("lateness %s is negative", c.Lateness))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("detect config: %w", err)
	}
	return nil
}

// Signal is one finding: Customer overloads the pipeline, by Metric, measured as Value.
type Signal struct {
	Customer string
	Metric   string  // MetricAge or MetricShare
	Value    float64 // median age in seconds, or share 0..1
	// The counts behind the figure, over the window that ends at WindowEnd.
	Events      int // the customer's events
	Late        int // the customer's late events (age rule)
	TotalEvents int // everyone's events
	Window      time.Duration
	WindowEnd   time.Time // in ingestion time
	Threshold   float64   // seconds (age) or fraction (share)
}

// Note is the finding in words, for throttle.Reason.Note. It is built on demand because
// most signals do not become a throttle.
func (s Signal) Note() string {
	switch s.Metric {
	case MetricAge:
		return fmt.Sprintf("median event age %.1fs exceeds %.0fs (%d of the customer's %d events ingested in the %s to %s were late) while other customers' events are on time",
			s.Value, s.Threshold, s.Late, s.Events, s.Window, s.WindowEnd.UTC().Format(time.RFC3339))
	case MetricShare:
		return fmt.Sprintf("sent %.1f%% of the %d events ingested in the %s to %s (%d events), above the %.0f%% threshold",
			100*s.Value, s.TotalEvents, s.Window, s.WindowEnd.UTC().Format(time.RFC3339), s.Events, 100*s.Threshold)
	}
	return s.Metric
}

// Detector counts events per customer in slots of ingestion time and judges each window
// once the watermark has passed it. It is not safe for concurrent use.
type Detector struct {
	cfg  Config
	slot time.Duration

	parts  map[int]*partition // the partitions this replica owns
	counts map[int64]*slotCounts
	// closed is the newest slot judged; events of it or older are not counted.
	closed int64
	// from is the first slot every owned partition has delivered from, once all have:
	// slots before it miss the events of some partition (processed by another replica,
	// or before a restart), so windows are cut there and judge only what all show.
	from    int64
	dropped int64
}

type partition struct {
	known    bool      // delivered an event, or was read to its end
	start    time.Time // the first ingestion time it showed
	progress time.Time // the newest ingestion time read from it
	caughtUp bool      // read to its end as of its last event
}

type slotCounts struct {
	total  tally
	byPart map[int]int // events per partition
	byCust map[string]*custSlot
}

type custSlot struct {
	tally
	part int             // a customer's events all come from one partition (keyed)
	ages []time.Duration // samples, once the customer had a late event in the slot
}

// tally counts events, and the late ones among them.
type tally struct{ total, late int }

// New returns a Detector. It owns no partition until Assigned.
func New(cfg Config) (*Detector, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Lateness == 0 {
		cfg.Lateness = DefaultLateness
	}
	d := &Detector{cfg: cfg, slot: cfg.Window / slots}
	d.Assigned(nil)
	return d, nil
}

// Assigned starts over with the partitions this replica owns now (a rebalance). What
// was counted before is dropped: it was counted over another set of partitions, and
// judging it with the new set's events would mix two views of the traffic.
func (d *Detector) Assigned(partitions []int) {
	d.parts = make(map[int]*partition, len(partitions))
	for _, p := range partitions {
		d.parts[p] = &partition{}
	}
	d.counts = map[int64]*slotCounts{}
	d.closed = math.MinInt64
	d.from = math.MinInt64
}

// Observe counts one event of customer, ingested at ingestedAt, read from partition p at
// now. caughtUp says p had no later record when it was read. It returns the signals of
// the windows this event's progress closed.
func (d *Detector) Observe(p int, customer string, ingestedAt, now time.Time, caughtUp bool) []Signal {
	part := d.parts[p]
	if part == nil {
		d.dropped++ // not ours (an event fetched before a rebalance)
		return nil
	}
	// A timestamp ahead of this clock is skew between hosts: it must not carry the
	// watermark past windows still being filled.
	if ingestedAt.After(now) {
		ingestedAt = now
	}
	if !part.known {
		part.known, part.start = true, ingestedAt
	}
	if ingestedAt.After(part.progress) {
		part.progress = ingestedAt
	}
	part.caughtUp = caughtUp
	d.count(p, customer, ingestedAt, now)
	return d.advance(now)
}

// Idle says partition p has nothing more to read as of now. It returns the signals of
// the windows that closed.
func (d *Detector) Idle(p int, now time.Time) []Signal {
	part := d.parts[p]
	if part == nil {
		return nil
	}
	if !part.known {
		// Its earlier events were handled before: the view starts now.
		part.known, part.start = true, now.Add(-d.cfg.Lateness)
	}
	part.caughtUp = true
	return d.advance(now)
}

// Tick moves the watermark of caught-up partitions with the clock, and returns the
// signals of the windows that closed. Call it every second or so.
func (d *Detector) Tick(now time.Time) []Signal { return d.advance(now) }

// Dropped is how many events were not counted: they came after their window was judged,
// or from a partition this replica no longer owns.
func (d *Detector) Dropped() int64 { return d.dropped }

// Customers is how many customers the open slots count.
func (d *Detector) Customers() int {
	seen := map[string]bool{}
	for _, sc := range d.counts {
		for c := range sc.byCust {
			seen[c] = true
		}
	}
	return len(seen)
}

func (d *Detector) slotOf(t time.Time) int64 {
	n := t.UnixNano()
	s := int64(d.slot)
	if n < 0 {
		return (n - s + 1) / s
	}
	return n / s
}

func (d *Detector) count(p int, customer string, ingestedAt, now time.Time) {
	e := d.slotOf(ingestedAt)
	if e <= d.closed {
		d.dropped++
		return
	}
	sc := d.counts[e]
	if sc == nil {
		sc = &slotCounts{byPart: map[int]int{}, byCust: map[string]*custSlot{}}
		d.counts[e] = sc
	}
	c := sc.byCust[customer]
	if c == nil {
		c = &custSlot{part: p}
		sc.byCust[customer] = c
	}
	sc.byPart[p]++
	// A clock behind ingestion's (skew between hosts) must not make an age negative.
	age := max(now.Sub(ingestedAt), 0)
	late := age > d.cfg.AgeThreshold
	sc.total.total++
	c.total++
	if late {
		sc.total.late++
		c.late++
	}
	if (late || c.ages != nil) && len(c.ages) < ageSamples {
		c.ages = append(c.ages, age)
	}
}

// watermark is the ingestion time every owned partition has passed, and whether it is
// known: a partition that has shown nothing yet holds it back.
func (d *Detector) watermark(now time.Time) (time.Time, bool) {
	var wm time.Time
	first := true
	for _, p := range d.parts {
		if !p.known {
			return time.Time{}, false
		}
		w := p.progress
		if p.caughtUp {
			if idle := now.Add(-d.cfg.Lateness); idle.After(w) {
				w = idle
			}
		}
		if first || w.Before(wm) {
			wm, first = w, false
		}
	}
	return wm, !first
}

// advance judges every slot that ends at or before the watermark, oldest first.
func (d *Detector) advance(now time.Time) []Signal {
	wm, ok := d.watermark(now)
	if !ok {
		return nil
	}
	if d.from == math.MinInt64 {
		var start time.Time
		for _, p := range d.parts {
			if p.start.After(start) {
				start = p.start
			}
		}
		d.from = d.slotOf(start)
	}
	// Slot e covers [e*slot, (e+1)*slot): it is complete once the watermark reaches its end.
	last := d.slotOf(wm) - 1
	if last <= d.closed {
		return nil
	}
	next := d.closed + 1
	if d.closed == math.MinInt64 || next < last-slots {
		next = last - slots // nothing to judge further back than one window
	}
	var out []Signal
	for e := next; e <= last; e++ {
		if d.counts[e] != nil {
			out = d.judge(e, out)
		}
		d.closed = e
	}
	for e := range d.counts {
		if e <= d.closed-slots {
			delete(d.counts, e)
		}
	}
	return out
}

// judge applies both rules to the window of slots that ends with slot e. The age rule
// is checked first: it is the symptom that hurts everyone else.
func (d *Detector) judge(e int64, out []Signal) []Signal {
	from := max(e-slots+1, d.from)
	var g tally
	own := map[string]*custSlot{}
	parts := map[int]int{}
	for s := from; s <= e; s++ {
		sc := d.counts[s]
		if sc == nil {
			continue
		}
		g.total += sc.total.total
		g.late += sc.total.late
		for p, n := range sc.byPart {
			parts[p] += n
		}
		for name, c := range sc.byCust {
			t := own[name]
			if t == nil {
				t = &custSlot{part: c.part}
				own[name] = t
			}
			t.total += c.total
			t.late += c.late
		}
	}
	end := time.Unix(0, (e+1)*int64(d.slot))
	names := make([]string, 0, len(own))
	for name := range own {
		names = append(names, name)
	}
	slices.Sort(names) // signals in a stable order
	for _, name := range names {
		c := own[name]
		if s, ok := d.age(name, &c.tally, g, parts[c.part], from, e); ok {
			s.WindowEnd = end
			out = append(out, s)
		} else if s, ok := d.share(name, &c.tally, g); ok {
			s.WindowEnd = end
			out = append(out, s)
		}
	}
	return out
}

// age applies the age rule. "More than half late" is the median being above the
// threshold, computed exactly from counts; the samples only give the reported figure.
// The customer must also have sent most of its partition's events: a replica that reads
// its partitions one after another makes a whole partition late, and customers that
// merely share it are not the cause.
func (d *Detector) age(name string, own *tally, g tally, partEvents int, from, e int64) (Signal, bool) {
	othersTotal, othersLate := g.total-own.total, g.late-own.late
	if own.total < d.cfg.AgeMinEvents || 2*own.late <= own.total || 2*own.total <= partEvents {
		return Signal{}, false
	}
	// Without other customers on time there is no evidence that this customer is the
	// cause: the whole pipeline is slow.
	if othersTotal == 0 || 2*othersLate >= othersTotal {
		return Signal{}, false
	}
	if float64(own.late) < d.cfg.AgeMinShare*float64(g.late) {
		return Signal{}, false
	}
	var ages []time.Duration
	for s := from; s <= e; s++ {
		if sc := d.counts[s]; sc != nil && sc.byCust[name] != nil {
			ages = append(ages, sc.byCust[name].ages...)
		}
	}
	return Signal{
		Customer: name, Metric: MetricAge, Value: median(ages).Seconds(),
		Events: own.total, Late: own.late, TotalEvents: g.total,
		Window: d.cfg.Window, Threshold: d.cfg.AgeThreshold.Seconds(),
	}, true
}

func (d *Detector) share(name string, own *tally, g tally) (Signal, bool) {
	if g.total < d.cfg.MinEvents {
		return Signal{}, false
	}
	share := float64(own.total) / float64(g.total)
	if share <= d.cfg.ShareThreshold {
		return Signal{}, false
	}
	return Signal{
		Customer: name, Metric: MetricShare, Value: share,
		Events: own.total, Late: own.late, TotalEvents: g.total,
		Window: d.cfg.Window, Threshold: d.cfg.ShareThreshold,
	}, true
}

func median(ages []time.Duration) time.Duration {
	if len(ages) == 0 {
		return 0
	}
	slices.Sort(ages)
	mid := len(ages) / 2
	if len(ages)%2 == 1 {
		return ages[mid]
	}
	return (ages[mid-1] + ages[mid]) / 2
}
