// Package expiry tombstones expired throttles on the throttle topic, so that compaction
// drops them, and writes again the throttles that a table no longer counts although they
// are current (see Sweeper). Processing runs it.
package expiry

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

// Sweeper removes expired throttles from the topic with tombstones, so compaction drops
// them for good, and repairs the one way a tombstone could lose a throttle.
//
// The hazard: the sweeper decides that T1 has expired; meanwhile T2, a renewal for the
// same customer, is published; the tombstone lands after T2. Compaction keeps the newest
// record per key, the tombstone, and T2 would be gone for good.
//
// The design is compare-before-delete plus repair, with no coordination between
// processing instances:
//  1. An expiry tombstone names the throttle it expires (header HeaderExpires). Every
//     throttle.Table deletes only if that is still the customer's current throttle, so readers
//     never lose T2, whatever the order of arrival.
//  2. Before writing, the sweeper checks its own caught-up table and skips a customer
//     whose current throttle is not the expired one.
//  3. When a table sees a tombstone that names an older throttle (throttle.ChangeStaleTombstone),
//     the sweeper publishes the current throttle again, unchanged (same ID). The log then
//     ends with T2 again and compaction keeps it. The topic's min.compaction.lag.ms (10
//     minutes by default) keeps the first T2 in the log until then.
//
// The same repair covers a poison record written under a throttled customer's key
// (throttle.ChangePoisoned): every table skips it and keeps the throttle, but compaction would
// keep only the poison record, and a replica rebuilding after that would not know the
// throttle. The sweeper writes the throttle again after it.
//
// And it covers partitions added to the topic (throttle.ChangeMoved): a throttle whose key now
// belongs to another partition no longer counts in any table, and the sweeper writes it
// again, which places it on its key's new partition.
//
// A re-publication is a plain write, not a compare-and-set (Kafka has none): an
// operator's lift that lands between the sweeper's check of its table and its write is
// undone by it. The window is the few milliseconds of one produce; lifting again ends it.
//
// Several instances may sweep at once: their tombstones name the same ID and their
// re-publications are the same record, so duplicates are harmless and they never fight
// over a key. A single writer per key (partition ownership) was the alternative; it
// needs a consumer group or leases just for sweeping, and still has the race when
// ownership moves.
type Sweeper struct {
	pub   *throttle.Publisher
	table *throttle.Table
	cfg   config

	mu      sync.Mutex
	expired map[string]throttle.Record // customer → expired throttle to tombstone
	hidden  map[string]throttle.Record // customer → throttle hidden behind a stale tombstone or a poison record
	moved   map[string]throttle.Record // customer → throttle left on its key's old partition
	wake    chan struct{}
}

// Opt configures a Sweeper.
type Opt interface{ apply(*config) }

type optFunc func(*config)

func (f optFunc) apply(c *config) { f(c) }

type config struct {
	grace      time.Duration
	interval   time.Duration
	timeout    time.Duration
	log        *zap.Logger
	clock      func() time.Time
	beforeTomb func(throttle.Record) // test hook: runs between the check and the write
}

// WithGrace delays the tombstone of an expired throttle (default 30s), so a renewal
// that is on its way usually lands first.
func WithGrace(d time.Duration) Opt {
	return optFunc(func(c *config) { c.grace = d })
}

// WithInterval sets how often pending work is retried (default 1s).
func WithInterval(d time.Duration) Opt {
	return optFunc(func(c *config) { c.interval = d })
}

// WithLogger sets the logger.
func WithLogger(l *zap.Logger) Opt {
	return optFunc(func(c *config) { c.log = l })
}

// WithClock replaces time.Now, for tests.
func WithClock(now func() time.Time) Opt {
	return optFunc(func(c *config) { c.clock = now })
}

// WithBeforeTombstone runs fn after the sweeper decided to tombstone r and before it
// writes: a fault-injection point for tests of the race described on Sweeper.
func WithBeforeTombstone(fn func(r throttle.Record)) Opt {
	return optFunc(func(c *config) { c.beforeTomb = fn })
}

// New returns a sweeper that writes with pub and judges with table. Feed it the
// table's changes: pass Sweeper.Observe to the table's WithObserver (directly or from
// your own observer).
func New(pub *throttle.Publisher, table *throttle.Table, opts ...Opt) (*Sweeper, error) {
	if pub == nil || table == nil {
		return nil, errors.New("new sweeper: publisher and table are required")
	}
	cfg := config{grace: 30 * time.Second, interval: time.Second, timeout: 10 * time.Second, log: zap.NewNop(), clock: time.Now}
	for _, o := range opts {
		o.apply(&cfg)
	}
	if cfg.grace < 0 || cfg.interval <= 0 || cfg.log == nil || cfg.clock == nil {
		return nil, errors.New("new sweeper: grace must be >= 0, interval positive")
	}
	return &Sweeper{
		pub: pub, table: table, cfg: cfg,
		expired: map[string]throttle.Record{}, hidden: map[string]throttle.Record{}, moved: map[string]throttle.Record{},
		wake: make(chan struct{}, 1),
	}, nil
}

// Observe takes a table change. It never blocks.
func (s *Sweeper) Observe(c throttle.Change) {
	s.mu.Lock()
	switch c.Kind {
	case throttle.ChangeExpired:
		if cur, ok := s.expired[c.Customer]; !ok || !cur.ExpiresAt.After(c.Record.ExpiresAt) {
			s.expired[c.Customer] = c.Record
		}
	case throttle.ChangeSet:
		// A newer throttle: nothing of this customer's is due for a tombstone.
		delete(s.expired, c.Customer)
	case throttle.ChangeLifted:
		delete(s.expired, c.Customer)
		delete(s.hidden, c.Customer)
		delete(s.moved, c.Customer)
	case throttle.ChangeStaleTombstone, throttle.ChangePoisoned:
		s.hidden[c.Customer] = c.Record
	case throttle.ChangeMoved:
		s.moved[c.Customer] = c.Record
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Pending returns how many tombstones and re-publications are waiting.
func (s *Sweeper) Pending() (tombstones, republications int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.expired), len(s.hidden) + len(s.moved)
}

// Run works until ctx ends, then returns nil. It acts only while the table is ready:
// before that it cannot tell an expired throttle from one renewed later in the log.
func (s *Sweeper) Run(ctx context.Context) error {
	tick := time.NewTicker(s.cfg.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-s.wake:
		}
		if s.table.Ready() {
			now := s.cfg.clock()
			s.republish(ctx, now)
			s.tombstoneExpired(ctx, now)
		}
	}
}

// republish writes again, unchanged, the throttles a table no longer counts although
// they are current: moved to another partition by added partitions, or hidden behind a
// stale expiry tombstone or a poison record.
func (s *Sweeper) republish(ctx context.Context, now time.Time) {
	s.mu.Lock()
	var again, moved []throttle.Record
	for _, r := range s.hidden {
		again = append(again, r)
	}
	for _, r := range s.moved {
		moved = append(moved, r)
	}
	s.mu.Unlock()

	for _, r := range moved {
		if _, ok := s.table.Get(r.Customer); ok || !r.Active(now) {
			s.done(s.moved, r) // written again (here or by its publisher), or lapsed
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, s.cfg.timeout)
		err := s.pub.Set(wctx, r)
		cancel()
		if err != nil {
			s.cfg.log.Warn("re-publish throttle moved by added partitions; will retry", zap.String("customer", r.Customer), zap.Error(err))
			continue
		}
		// Done once the table holds it again: a writer with stale metadata may have put
		// it on the old partition, and then it is written again next time.
		s.cfg.log.Info("re-published throttle whose key moved to another partition", zap.String("customer", r.Customer), zap.String("throttle_id", r.ID))
	}

	for _, r := range again {
		cur, ok := s.table.Get(r.Customer)
		if !ok || cur.ID != r.ID {
			s.done(s.hidden, r) // expired or replaced since: nothing to repair
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, s.cfg.timeout)
		err := s.pub.Set(wctx, cur)
		cancel()
		if err != nil {
			s.cfg.log.Warn("re-publish throttle hidden by a stale tombstone; will retry", zap.String("customer", r.Customer), zap.Error(err))
			continue
		}
		s.cfg.log.Info("re-published throttle after a stale expiry tombstone", zap.String("customer", r.Customer), zap.String("throttle_id", r.ID))
		s.done(s.hidden, r)
	}

}

// tombstoneExpired writes an expiry tombstone for each throttle expired longer than the
// grace ago, unless the table holds a newer one for its customer.
func (s *Sweeper) tombstoneExpired(ctx context.Context, now time.Time) {
	s.mu.Lock()
	var tombs []throttle.Record
	for _, r := range s.expired {
		if !now.Before(r.ExpiresAt.Add(s.cfg.grace)) {
			tombs = append(tombs, r)
		}
	}
	s.mu.Unlock()
	for _, r := range tombs {
		if cur, ok := s.table.Lookup(r.Customer); ok && cur.ID() != r.ID {
			s.done(s.expired, r) // renewed: the newer throttle stays
			continue
		}
		if s.cfg.beforeTomb != nil {
			s.cfg.beforeTomb(r)
		}
		wctx, cancel := context.WithTimeout(ctx, s.cfg.timeout)
		err := s.pub.Expire(wctx, r)
		cancel()
		if err != nil {
			s.cfg.log.Warn("tombstone expired throttle; will retry", zap.String("customer", r.Customer), zap.Error(err))
			continue
		}
		s.cfg.log.Info("tombstoned expired throttle", zap.String("customer", r.Customer), zap.String("throttle_id", r.ID))
		s.done(s.expired, r)
	}
}

// done removes r from m unless a newer entry replaced it meanwhile.
func (s *Sweeper) done(m map[string]throttle.Record, r throttle.Record) {
	s.mu.Lock()
	if cur, ok := m[r.Customer]; ok && cur.ID == r.ID {
		delete(m, r.Customer)
	}
	s.mu.Unlock()
}
