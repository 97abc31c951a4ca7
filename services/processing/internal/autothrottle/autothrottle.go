// Package autothrottle turns the detector's findings into throttles: it sets one when a
// customer starts to overload the pipeline, renews it while the overload lasts, and
// lets it expire when the overload ends.
//
// It writes through a Publisher and reads the current throttles through a Table
// lookup (in the service, the shared throttle.Publisher and throttle.Table). The table
// is the source of truth; the controller remembers what it published only to bridge the
// moment between a write and the table reading it back.
package autothrottle

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/services/platform/event"
	"github.com/sluice-dev/sluice/services/processing/internal/detect"
	"github.com/sluice-dev/sluice/services/processing/internal/metrics"
)

// Publisher writes a throttle record to the throttle topic.
type Publisher interface {
	Set(ctx context.Context, r throttle.Record) error
}

// Table looks up a customer's current throttle.
type Table interface {
	Get(customer string) (throttle.Record, bool)
}

const (
	// settle is how long a throttle this controller published counts as current while
	// the table does not show it yet. Past it, the table's word wins: a throttle that
	// was lifted meanwhile is not kept alive by local memory.
	settle = 30 * time.Second
	// retryAfter spaces attempts to publish for one customer after a failure, so an
	// unreachable broker costs one timeout per customer per retryAfter, not one per event.
	retryAfter = 5 * time.Second
	// publishTimeout bounds one write of a throttle.
	publishTimeout = 5 * time.Second
)

// Config is what a controller throttles with.
type Config struct {
	Detect      detect.Config
	Limit       int64         // events per Window allowed to a throttled customer
	Window      time.Duration // whole milliseconds
	Duration    time.Duration // how long a throttle lasts from when it is set or renewed
	RenewMargin time.Duration // renew when the throttle is this close to expiry
	Mode        throttle.Mode
	InstanceID  string // SetBy of the records
}

func (c Config) validate() error {
	switch {
	case c.Limit < 0:
		return fmt.Errorf("autothrottle config: limit %d is negative", c.Limit)
	case c.Window <= 0 || c.Window%time.Millisecond != 0:
		return fmt.Errorf("autothrottle config: window %s is not a positive whole number of milliseconds", c.Window)
	case c.Duration <= 0:
		return fmt.Errorf("autothrottle config: duration %s is not positive", c.Duration)
	case c.RenewMargin <= 0 || c.RenewMargin >= c.Duration:
		return fmt.Errorf("autothrottle config: renew margin %s is not in (0, duration %s)", c.RenewMargin, c.Duration)
	case c.InstanceID == "":
		return errors.New("autothrottle config: instance id is empty")
	}
	return nil
}

// Option tunes a Controller.
type Option interface{ apply(*Controller) }

type optionFunc func(*Controller)

func (f optionFunc) apply(c *Controller) { f(c) }

// WithClock makes the controller (and its detector) read the time from now.
func WithClock(now func() time.Time) Option { return optionFunc(func(c *Controller) { c.now = now }) }

// WithIDs makes the controller take record ids from newID (default: random UUIDs).
func WithIDs(newID func() string) Option { return optionFunc(func(c *Controller) { c.newID = newID }) }

// WithMetrics counts throttles on m.
func WithMetrics(m *metrics.Metrics) Option { return optionFunc(func(c *Controller) { c.metrics = m }) }

// WithLogger logs each throttle set, renewed, expired or failed to publish.
func WithLogger(l *zap.Logger) Option { return optionFunc(func(c *Controller) { c.log = l }) }

// Controller decides and publishes automatic throttles. Its methods are safe for
// concurrent use.
type Controller struct {
	cfg     Config
	pub     Publisher
	table   Table
	now     func() time.Time
	newID   func() string
	metrics *metrics.Metrics
	log     *zap.Logger

	mu         sync.Mutex
	det        *detect.Detector
	issued     map[string]issued    // automatic throttles this controller published
	failed     map[string]time.Time // when publishing for a customer last failed
	publishing map[string]bool      // a write for the customer is under way
}

type issued struct {
	rec         throttle.Record
	publishedAt time.Time
}

// New returns a controller publishing through pub and reading throttles from table.
func New(cfg Config, pub Publisher, table Table, opts ...Option) (*Controller, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if pub == nil || table == nil {
		return nil, errors.New("autothrottle: publisher and throttles are required")
	}
	c := &Controller{
		cfg: cfg, pub: pub, table: table,
		now: time.Now, newID: uuid.NewString,
		issued: map[string]issued{}, failed: map[string]time.Time{}, publishing: map[string]bool{},
	}
	for _, o := range opts {
		o.apply(c)
	}
	if c.metrics == nil {
		c.metrics = metrics.Discard()
	}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	det, err := detect.New(cfg.Detect)
	if err != nil {
		return nil, err
	}
	c.det = det
	return c, nil
}

// Assigned starts the detector over with the partitions this replica owns now: call it
// at every rebalance, before the first event of the new assignment.
func (c *Controller) Assigned(partitions []int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.det.Assigned(partitions)
}

// Observe counts one processed event of partition p (caughtUp: p had no later record
// when it was read) and, for each customer that the windows this closes show
// overloading the pipeline, sets or renews its throttle. A failed write is logged and
// counted, and retried at a later window: an event is never failed for it.
func (c *Controller) Observe(ctx context.Context, p int, ev event.Event, caughtUp bool) {
	c.mu.Lock()
	before := c.det.Dropped()
	sigs := c.det.Observe(p, ev.Customer, ev.IngestedAt, c.now(), caughtUp)
	if c.det.Dropped() != before {
		c.metrics.Uncounted.Inc()
	}
	c.mu.Unlock()
	c.act(ctx, sigs)
}

// Idle says partition p has nothing to read as of now, so windows need not wait for it.
func (c *Controller) Idle(ctx context.Context, p int) {
	c.mu.Lock()
	sigs := c.det.Idle(p, c.now())
	c.mu.Unlock()
	c.act(ctx, sigs)
}

func (c *Controller) act(ctx context.Context, sigs []detect.Signal) {
	for _, sig := range sigs {
		c.signal(ctx, sig)
	}
}

func (c *Controller) signal(ctx context.Context, sig detect.Signal) {
	c.mu.Lock()
	now := c.now()
	rec, action, ok := c.decideLocked(sig, now)
	if ok {
		c.publishing[sig.Customer] = true
	}
	c.mu.Unlock()
	if !ok {
		return
	}

	// The write happens outside the lock: it is network I/O, and Tick and Forget must
	// not wait for it. It is not cut short by shutdown: a throttle decided is published.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	err := c.pub.Set(pctx, rec)
	cancel()

	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.publishing, sig.Customer)
	if err != nil {
		c.failed[sig.Customer] = c.now()
		c.metrics.PublishErrors.WithLabelValues(action).Inc()
		c.log.Error("publish throttle", zap.String("customer", rec.Customer), zap.String("action", action),
			zap.String("id", rec.ID), zap.Error(err))
		return
	}
	delete(c.failed, sig.Customer)
	c.issued[sig.Customer] = issued{rec: rec, publishedAt: now}
	c.metrics.Throttles.WithLabelValues(action, rec.Reason.Metric).Inc()
	c.log.Info("throttle "+action, zap.String("customer", rec.Customer), zap.String("id", rec.ID),
		zap.String("metric", rec.Reason.Metric), zap.Float64("value", rec.Reason.Value),
		zap.Int64("limit", rec.Limit), zap.Duration("window", rec.Window),
		zap.Time("expires_at", rec.ExpiresAt), zap.String("mode", rec.Mode.String()))
}

// decideLocked says whether sig calls for a new throttle (metrics.ActionSet), a renewal
// (metrics.ActionRenewed), or nothing.
func (c *Controller) decideLocked(sig detect.Signal, now time.Time) (throttle.Record, string, bool) {
	if c.publishing[sig.Customer] {
		return throttle.Record{}, "", false
	}
	if t, ok := c.failed[sig.Customer]; ok && now.Sub(t) < retryAfter {
		return throttle.Record{}, "", false
	}
	// Every event of a flooding customer comes here: the checks that end in "nothing to
	// do" come before any allocation.
	action := metrics.ActionSet
	if cur, ok := c.currentLocked(sig.Customer, now); ok {
		// An operator's throttle stands as set: exempting a customer from automatic
		// throttles is done by giving it a manual one.
		if cur.Reason.Kind == throttle.ReasonManual {
			return throttle.Record{}, "", false
		}
		if cur.ExpiresAt.Sub(now) > c.cfg.RenewMargin {
			return throttle.Record{}, "", false
		}
		action = metrics.ActionRenewed
	}
	note := sig.Note()
	if action == metrics.ActionRenewed {
		note = "renewed, overload continues: " + note
	}
	// Every record gets a new id, renewals too: the table and the sweeper tell versions
	// of a customer's throttle apart by id, and a duplicate from a producer retry has
	// the same id and the same state.
	created := now.UTC().Truncate(time.Millisecond) // the wire keeps milliseconds
	rec := throttle.Record{
		ID:        c.newID(),
		Customer:  sig.Customer,
		Limit:     c.cfg.Limit,
		Window:    c.cfg.Window,
		CreatedAt: created,
		ExpiresAt: created.Add(c.cfg.Duration),
		Reason: throttle.Reason{
			Kind: throttle.ReasonAutomatic, Note: note, Metric: sig.Metric, Value: sig.Value,
		},
		SetBy: c.cfg.InstanceID,
		Mode:  c.cfg.Mode,
	}
	return rec, action, true
}

// currentLocked is the customer's active throttle: the table's, unless this controller
// published a newer one that the table does not show yet.
func (c *Controller) currentLocked(customer string, now time.Time) (throttle.Record, bool) {
	t, tok := c.table.Get(customer)
	tok = tok && t.Active(now)
	mine, mok := c.issued[customer]
	mok = mok && mine.rec.Active(now)
	switch {
	case tok && mok:
		if mine.rec.ID != t.ID && mine.rec.CreatedAt.After(t.CreatedAt) {
			return mine.rec, true
		}
		return t, true
	case tok:
		return t, true
	case mok && now.Sub(mine.publishedAt) < settle:
		return mine.rec, true
	}
	return throttle.Record{}, false
}

// Tick judges the windows that caught-up partitions have passed with the clock, and
// accounts for the automatic throttles this controller published that have expired
// without a renewal. Removing them from the topic is the sweeper's job.
func (c *Controller) Tick(ctx context.Context) {
	now := c.now()
	c.mu.Lock()
	sigs := c.det.Tick(now)
	c.mu.Unlock()
	c.act(ctx, sigs)
	c.mu.Lock()
	defer c.mu.Unlock()
	for customer, is := range c.issued {
		if is.rec.Active(now) {
			continue
		}
		delete(c.issued, customer)
		if t, ok := c.table.Get(customer); ok && t.ID != is.rec.ID && t.ExpiresAt.After(is.rec.ExpiresAt) {
			continue // replaced by a newer throttle: it did not expire
		}
		c.metrics.Throttles.WithLabelValues(metrics.ActionExpired, is.rec.Reason.Metric).Inc()
		c.log.Info("throttle expired", zap.String("customer", customer), zap.String("id", is.rec.ID),
			zap.Time("expires_at", is.rec.ExpiresAt))
	}
	for customer, at := range c.failed {
		if now.Sub(at) >= retryAfter {
			delete(c.failed, customer)
		}
	}
}

// Run calls Tick every interval until ctx is done, and returns nil then.
func (c *Controller) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			c.Tick(ctx)
		}
	}
}

// Forget drops what the controller remembers of customer's throttle: an operator lifted
// it. If the overload continues, the next event sets a new throttle.
func (c *Controller) Forget(customer string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.issued, customer)
	delete(c.failed, customer)
}
