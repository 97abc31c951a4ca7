// Package detect decides, event by event, whether a customer overloads the pipeline.
//
// A Detector is pure: it reads time only from the clock it is given and keeps
// everything in memory, so tests drive it with a fake clock and the processing service
// owns when and how a finding becomes a throttle (package autothrottle).
package detect

import (
	"errors"
	"fmt"
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

// slots is how many buckets a window is cut into: the window slides by window/slots,
// which is fine-grained enough to notice a flood within seconds and keeps a customer's
// state to a few hundred bytes.
const slots = 12

// ageSamples is how many recent ages per customer are kept to report the median age.
// The decision itself uses exact counts; the samples only give the figure.
const ageSamples = 64

// Config sets the rules. See New for the constraints.
type Config struct {
	// Window is the span both rules look back over (a sliding window).
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
	// The counts behind the figure, over Window.
	Events      int // the customer's events
	Late        int // the customer's late events (age rule)
	TotalEvents int // everyone's events
	Window      time.Duration
	Threshold   float64 // seconds (age) or fraction (share)
}

// Note is the finding in words, for throttle.Reason.Note. It is built on demand because
// most signals do not become a throttle.
func (s Signal) Note() string {
	switch s.Metric {
	case MetricAge:
		return fmt.Sprintf("median event age %.1fs exceeds %.0fs (%d of the customer's %d events in the last %s were late) while other customers' events are on time",
			s.Value, s.Threshold, s.Late, s.Events, s.Window)
	case MetricShare:
		return fmt.Sprintf("sent %.1f%% of the %d events in the last %s (%d events), above the %.0f%% threshold",
			100*s.Value, s.TotalEvents, s.Window, s.Events, 100*s.Threshold)
	}
	return s.Metric
}

// Detector keeps per-customer counts over a sliding window. It is not safe for
// concurrent use: the caller serialises Observe.
type Detector struct {
	cfg    Config
	now    func() time.Time
	slot   time.Duration
	global series
	byCust map[string]*customer
	gcAt   int64 // epoch of the next sweep of idle customers
}

// New returns a Detector that reads the time from now.
func New(cfg Config, now func() time.Time) (*Detector, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if now == nil {
		return nil, errors.New("detect: clock is nil")
	}
	return &Detector{cfg: cfg, now: now, slot: cfg.Window / slots, byCust: map[string]*customer{}}, nil
}

// Observe counts one event of customer name, stamped at ingestedAt, as processed now, and
// reports whether the customer overloads the pipeline. The age rule is checked first: it
// is the symptom that hurts everyone else.
func (d *Detector) Observe(name string, ingestedAt time.Time) (Signal, bool) {
	now := d.now()
	// A clock behind ingestion's (skew between hosts) must not make an age negative.
	age := max(now.Sub(ingestedAt), 0)
	late := age > d.cfg.AgeThreshold
	epoch := now.UnixNano() / int64(d.slot)

	d.gc(epoch)
	c := d.byCust[name]
	if c == nil {
		c = &customer{}
		d.byCust[name] = c
	}
	d.global.add(epoch, late)
	c.add(epoch, late)
	c.record(epoch, age, late)

	if s, ok := d.age(name, c, epoch); ok {
		return s, true
	}
	return d.share(name, c)
}

// age applies the age rule. "More than half late" is the median being above the
// threshold, computed exactly from counts; the samples only give the reported figure.
func (d *Detector) age(name string, c *customer, epoch int64) (Signal, bool) {
	g, own := d.global.sum, c.sum
	othersTotal, othersLate := g.total-own.total, g.late-own.late
	if own.total < d.cfg.AgeMinEvents || 2*own.late <= own.total {
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
	return Signal{
		Customer: name, Metric: MetricAge, Value: c.medianAge(epoch).Seconds(),
		Events: own.total, Late: own.late, TotalEvents: g.total,
		Window: d.cfg.Window, Threshold: d.cfg.AgeThreshold.Seconds(),
	}, true
}

func (d *Detector) share(name string, c *customer) (Signal, bool) {
	g, own := d.global.sum, c.sum
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

// gc forgets customers with no event in the window, once per window, so the map holds
// only the customers currently sending.
func (d *Detector) gc(epoch int64) {
	if epoch < d.gcAt {
		return
	}
	for name, c := range d.byCust {
		if epoch-c.epoch >= slots {
			delete(d.byCust, name)
		}
	}
	d.gcAt = epoch + slots
}

// Customers is how many customers the detector currently tracks.
func (d *Detector) Customers() int { return len(d.byCust) }

// tally counts events, and the late ones among them.
type tally struct{ total, late int }

// series is a ring of per-slot tallies with their running sum: the window's counts.
type series struct {
	buckets [slots]tally
	epoch   int64 // newest slot counted
	sum     tally
}

// add counts an event in slot epoch. An epoch older than the newest (a clock that went
// back) counts in the newest slot.
func (s *series) add(epoch int64, late bool) {
	s.advance(epoch)
	b := &s.buckets[s.epoch%slots]
	b.total++
	s.sum.total++
	if late {
		b.late++
		s.sum.late++
	}
}

// advance drops the slots that fell out of the window ending at epoch.
func (s *series) advance(epoch int64) {
	if epoch <= s.epoch {
		return
	}
	if epoch-s.epoch >= slots {
		*s = series{epoch: epoch}
		return
	}
	for e := s.epoch + 1; e <= epoch; e++ {
		b := &s.buckets[e%slots]
		s.sum.total -= b.total
		s.sum.late -= b.late
		*b = tally{}
	}
	s.epoch = epoch
}

type sample struct {
	epoch int64
	age   time.Duration
}

type customer struct {
	series
	// ages holds the recent ages, from the customer's first late event on: most
	// customers are never late, and they cost only their counts (about 200 bytes).
	ages *[ageSamples]sample
	next int // where the next sample goes
	n    int // samples held
}

func (c *customer) record(epoch int64, age time.Duration, late bool) {
	if c.ages == nil {
		if !late {
			return
		}
		c.ages = new([ageSamples]sample)
	}
	c.ages[c.next] = sample{epoch: epoch, age: age}
	c.next = (c.next + 1) % ageSamples
	c.n = min(c.n+1, ageSamples)
}

// medianAge is the median of the customer's recent ages within the window (those
// recorded since its first late event).
func (c *customer) medianAge(epoch int64) time.Duration {
	if c.ages == nil {
		return 0
	}
	var buf [ageSamples]time.Duration
	ages := buf[:0]
	for _, s := range c.ages[:c.n] {
		if epoch-s.epoch < slots {
			ages = append(ages, s.age)
		}
	}
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
