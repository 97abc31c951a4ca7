// Package consume reads the events topic in a consumer group and hands the events to a
// Handler in batches, at least once: an event's offset is committed only after it, and
// every earlier event of its partition, was handled or written to the dead-letter topic. A poison event (one that does not decode, or that
// the handler keeps failing) is dead-lettered with headers saying why, where from and
// when, so the consumer never stalls on it.
package consume

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/services/platform/audit"
	"github.com/sluice-dev/sluice/services/platform/event"
	"github.com/sluice-dev/sluice/services/platform/wait"
	"github.com/sluice-dev/sluice/services/processing/internal/metrics"
)

// Config tunes a Consumer.
type Config struct {
	// Retries is how many times a failed handler is tried again before the event is
	// dead-lettered (0: once only).
	Retries int
	// Backoff is the wait before the first retry, doubled for each next one up to
	// MaxBackoff (default 5s). Also the first wait before retrying a dead-letter write.
	Backoff    time.Duration
	MaxBackoff time.Duration
	// HandlerTimeout bounds one attempt. An attempt under way when shutdown starts runs
	// to its end or to this timeout, so work that is half done is finished.
	HandlerTimeout time.Duration
	// CommitInterval is how often handled offsets are committed; at most this much work
	// is repeated after a crash. Shutdown commits everything handled.
	CommitInterval time.Duration
	// InstanceID goes in the dead-letter headers.
	InstanceID string
	// BatchSize is the most events handed to the handler at once (default 1000).
	BatchSize int
}

func (c *Config) fill() error {
	if c.Retries < 0 {
		return fmt.Errorf("consumer config: retries %d is negative", c.Retries)
	}
	if c.Backoff <= 0 {
		c.Backoff = 100 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 5 * time.Second
	}
	if c.HandlerTimeout <= 0 {
		c.HandlerTimeout = 10 * time.Second
	}
	if c.CommitInterval <= 0 {
		c.CommitInterval = time.Second
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 1000
	}
	return nil
}

// commitTimeout bounds the last commit at shutdown; the service's shutdown deadline
// bounds the whole drain.
const commitTimeout = 10 * time.Second

// Option tunes a Consumer.
type Option interface{ apply(*Consumer) }

type optionFunc func(*Consumer)

func (f optionFunc) apply(c *Consumer) { f(c) }

// WithObserver shows every decoded event to o (the overload detector).
func WithObserver(o Observer) Option { return optionFunc(func(c *Consumer) { c.observer = o }) }

// WithMetrics counts events, ages, dead letters and lag on m.
func WithMetrics(m *metrics.Metrics) Option { return optionFunc(func(c *Consumer) { c.metrics = m }) }

// WithLogger logs dead letters, commit failures and fetch errors.
func WithLogger(l *zap.Logger) Option { return optionFunc(func(c *Consumer) { c.log = l }) }

// WithAudit counts every record forwarded or dead-lettered on t, and publishes t's
// counts before each commit: a record is committed only once its count is published,
// so a crash loses no count, and what the next owner handles again is a duplicate.
func WithAudit(t *audit.Tally) Option { return optionFunc(func(c *Consumer) { c.audit = t }) }

// WithClock makes the consumer measure event ages and stamp dead letters with now.
func WithClock(now func() time.Time) Option { return optionFunc(func(c *Consumer) { c.now = now }) }

// Consumer runs the consumer group of the events topic: per generation, one reader per
// assigned partition feeds a pipeline that hands events to the handler in batches,
// dead-letters what fails, and commits.
type Consumer struct {
	kc       cluster.Config
	topic    string
	group    string
	dlq      Writer
	h        Handler
	cfg      Config
	observer Observer
	metrics  *metrics.Metrics
	log      *zap.Logger
	now      func() time.Time
	audit    *audit.Tally

	running atomic.Bool
	failing atomic.Bool // joining the group failed last time
	joined  atomic.Bool // a generation has started since Run began

	lag map[int]prometheus.Gauge // per partition; touched only by the handling goroutine
}

// New returns a consumer of topic in group that hands events to h and dead-letters to
// dlq.
func New(kc cluster.Config, topic, group string, dlq Writer, h Handler, cfg Config, opts ...Option) (*Consumer, error) {
	if len(kc.Brokers) == 0 || topic == "" || group == "" {
		return nil, errors.New("new consumer: brokers, topic and group are required")
	}
	if dlq == nil || h == nil {
		return nil, errors.New("new consumer: dead-letter writer and handler are required")
	}
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	c := &Consumer{kc: kc, topic: topic, group: group, dlq: dlq, h: h, cfg: cfg, now: time.Now, lag: map[int]prometheus.Gauge{}}
	for _, o := range opts {
		o.apply(c)
	}
	if c.metrics == nil {
		c.metrics = metrics.Discard()
	}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	return c, nil
}

// Ready reports whether Run is running, has joined the group once, and its last attempt
// to join did not fail: before the first join nothing is consumed yet (on a new cluster
// the first join waits for the offsets topic to be created).
func (c *Consumer) Ready() bool { return c.running.Load() && c.joined.Load() && !c.failing.Load() }

// Run consumes until ctx is done: it commits the offsets of everything handled, leaves
// the group and returns nil, or the error of the final commit. A batch being handled
// when ctx ends is finished (each attempt bounded by HandlerTimeout); events waiting
// for a retry are left uncommitted, to be consumed again.
func (c *Consumer) Run(ctx context.Context) error {
	c.running.Store(true)
	defer c.running.Store(false)
	defer c.joined.Store(false)
	cg, err := kafka.NewConsumerGroup(groupConfig(c.kc, c.topic, c.group, c.log))
	if err != nil {
		return fmt.Errorf("consumer group %s: %w", c.group, err)
	}
	defer cg.Close() // leaves the group, so the others take over at once
	backoff := c.cfg.Backoff
	for {
		gen, err := cg.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.failing.Store(true)
			c.log.Warn("join consumer group", zap.String("group", c.group), zap.Error(err), zap.Duration("retry_in", backoff))
			if !wait.Sleep(ctx, backoff) {
				return nil
			}
			backoff = min(2*backoff, c.cfg.MaxBackoff)
			continue
		}
		c.failing.Store(false)
		c.joined.Store(true)
		backoff = c.cfg.Backoff
		if err := c.generation(ctx, gen); err != nil || ctx.Err() != nil {
			return err
		}
	}
}

// fetched is one record from a partition reader, or a note that the partition has
// nothing to read (idle).
type fetched struct {
	msg  kafka.Message
	idle bool
}

// generation runs one generation of the group: readers of the assigned partitions feed
// the handling loop until the generation ends (a rebalance) or ctx does. It returns the
// error of the final commit at shutdown.
func (c *Consumer) generation(ctx context.Context, gen *kafka.Generation) error {
	var parts []int
	offsets := map[int]int64{}
	for _, a := range gen.Assignments[c.topic] {
		parts = append(parts, a.ID)
		offsets[a.ID] = a.Offset
	}
	slices.Sort(parts)
	c.log.Info("partitions assigned", zap.Int32("generation", gen.ID), zap.Ints("partitions", parts))
	if c.observer != nil {
		c.observer.Assigned(parts)
	}
	in := make(chan fetched, c.cfg.BatchSize)
	if len(parts) > 0 {
		// A partition with nothing to read says so once; without that, the detector's
		// watermark waits for it. So the end offsets are worth a few attempts.
		var first, end map[int]int64
		var err error
		backoff := c.cfg.Backoff
		for attempt := 1; ; attempt++ {
			lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			first, end, err = endOffsets(lctx, c.kc, c.topic, parts)
			cancel()
			if err == nil || attempt == 5 || !wait.Sleep(ctx, backoff) {
				break
			}
			backoff = min(2*backoff, c.cfg.MaxBackoff)
		}
		if err != nil {
			c.log.Warn("end offsets: partitions count as busy until they deliver", zap.Error(err))
		}
		for _, p := range parts {
			from := offsets[p]
			if from < 0 {
				from = first[p]
			}
			idle := err == nil && from >= end[p]
			gen.Start(func(gctx context.Context) { c.read(gctx, p, offsets[p], idle, in) })
		}
	}
	done := make(chan error, 1)
	gen.Start(func(gctx context.Context) { done <- c.handleLoop(ctx, gctx, gen, in) })
	return <-done
}

// read feeds in with partition p's records from offset until the generation ends.
func (c *Consumer) read(gctx context.Context, p int, offset int64, idle bool, in chan<- fetched) {
	r, err := partitionReader(c.kc, c.topic, p, offset, c.log)
	if err != nil {
		c.log.Error("partition reader", zap.Int("partition", p), zap.Error(err))
		return
	}
	defer r.Close()
	if idle {
		select {
		case in <- fetched{msg: kafka.Message{Partition: p}, idle: true}:
		case <-gctx.Done():
			return
		}
	}
	for {
		m, err := r.FetchMessage(gctx)
		if err != nil {
			if gctx.Err() != nil {
				return
			}
			c.log.Warn("fetch event", zap.Int("partition", p), zap.Error(err))
			if !wait.Sleep(gctx, c.cfg.Backoff) {
				return
			}
			continue
		}
		select {
		case in <- fetched{msg: m}:
		case <-gctx.Done():
			return // not handled, so not committed: the next owner reads it again
		}
	}
}

// handleLoop hands the fetched records to the handler in batches and commits. It ends
// when the generation does (gctx) or at shutdown (ctx), after committing what was
// handled.
//
// The invariant, where offsets are committed: a partition's offset is committed only
// when every earlier record of that partition this generation fetched was handled or
// dead-lettered. Batches are taken in fetch order and a batch's offsets count only up to
// its first record not yet done.
func (c *Consumer) handleLoop(ctx, gctx context.Context, gen *kafka.Generation, in <-chan fetched) error {
	next := map[int]int64{} // partition → offset to commit: every record before it is done
	lastCommit := c.now()
	final := func() error {
		if err := c.commit(gen, next); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("final commit: %w", err)
			}
			// A rebalance: the next owner reads these again.
		}
		return nil
	}
	for {
		if len(next) > 0 && c.now().Sub(lastCommit) >= c.cfg.CommitInterval {
			_ = c.commit(gen, next) // logged and counted; retried with the next commit
			lastCommit = c.now()
		}
		batch, stop := c.gather(ctx, gctx, in, len(next) > 0, c.cfg.CommitInterval-c.now().Sub(lastCommit))
		if len(batch) > 0 {
			c.process(ctx, batch, next)
		}
		if stop || ctx.Err() != nil {
			return final()
		}
	}
}

// gather waits for the first record (until the next commit is due when one is waiting),
// then takes what else is already fetched, up to BatchSize. stop is true once ctx or the
// generation ended.
func (c *Consumer) gather(ctx, gctx context.Context, in <-chan fetched, due bool, wait time.Duration) (batch []fetched, stop bool) {
	var timer <-chan time.Time
	if due {
		t := time.NewTimer(max(wait, 0))
		defer t.Stop()
		timer = t.C
	}
	select {
	case f := <-in:
		batch = append(batch, f)
	case <-timer:
		return nil, false
	case <-ctx.Done():
		return nil, true
	case <-gctx.Done():
		return nil, true
	}
	for len(batch) < c.cfg.BatchSize {
		select {
		case f := <-in:
			batch = append(batch, f)
		default:
			return batch, false
		}
	}
	return batch, false
}

// process handles one batch: it decodes, shows the events to the observer, hands them to
// the handler with retries, dead-letters what cannot be handled, and moves next over the
// records done. Shutdown during a retry's backoff leaves the rest undone.
func (c *Consumer) process(ctx context.Context, batch []fetched, next map[int]int64) {
	done := make([]bool, len(batch))
	var items []Item
	var at []int // items[j] is batch[at[j]]
	var dead []deadLetter
	var ids []string // the event ids, for the audit
	if c.audit != nil {
		ids = make([]string, len(batch))
	}
	for i, f := range batch {
		if f.idle {
			if c.observer != nil {
				c.observer.Idle(ctx, f.msg.Partition)
			}
			done[i] = true
			continue
		}
		msg := f.msg
		c.partitionLag(msg.Partition).Set(float64(max(msg.HighWaterMark-msg.Offset-1, 0)))
		ev, err := event.Decode(msg.Value)
		if err != nil {
			// Retrying cannot fix bytes: straight to the dead-letter topic.
			dead = append(dead, deadLetter{i, StageDecode, 0, err})
			continue
		}
		c.metrics.EventAge.Observe(max(c.now().Sub(ev.IngestedAt), 0).Seconds())
		if c.observer != nil {
			c.observer.Observe(ctx, msg.Partition, ev, msg.Offset+1 >= msg.HighWaterMark)
		}
		if ids != nil {
			ids[i] = ev.ID
		}
		items = append(items, Item{Event: ev, Msg: msg})
		at = append(at, i)
	}

	backoff := c.cfg.Backoff
	for attempt := 1; len(items) > 0; attempt++ {
		// An attempt is not cut short by shutdown (ctx), only by its own timeout: work
		// that has begun is finished, then committed.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.HandlerTimeout)
		err := c.h.Handle(actx, items)
		cancel()
		var retry []Item
		var retryAt []int
		handled := 0
		for j := range items {
			ierr := err
			var each Failures
			if errors.As(err, &each) && len(each) == len(items) {
				ierr = each[j]
			}
			switch {
			case ierr == nil:
				done[at[j]] = true
				handled++
			case attempt > c.cfg.Retries || isPermanent(ierr):
				dead = append(dead, deadLetter{at[j], StageHandler, attempt, ierr})
			default:
				retry, retryAt = append(retry, items[j]), append(retryAt, at[j])
			}
		}
		c.metrics.Events.WithLabelValues("handled").Add(float64(handled))
		items, at = retry, retryAt
		if len(items) > 0 && !wait.Sleep(ctx, backoff) {
			break // shutdown: the rest stays undone, to be consumed again
		}
		backoff = min(2*backoff, c.cfg.MaxBackoff)
	}
	deadDone := len(dead) > 0 && c.deadLetters(ctx, batch, dead)
	if deadDone {
		for _, d := range dead {
			done[d.index] = true
		}
	}
	if c.audit != nil {
		c.count(batch, ids, done, dead, deadDone)
	}

	blocked := map[int]bool{}
	for i, f := range batch {
		p := f.msg.Partition
		switch {
		case f.idle || blocked[p]:
		case done[i]:
			next[p] = f.msg.Offset + 1
		default:
			blocked[p] = true
		}
	}
}

// count counts the batch's records done on the audit tally: dead-lettered, or forwarded.
func (c *Consumer) count(batch []fetched, ids []string, done []bool, dead []deadLetter, deadDone bool) {
	isDead := make(map[int]bool, len(dead))
	if deadDone {
		for _, d := range dead {
			isDead[d.index] = true
		}
	}
	for i, f := range batch {
		if done[i] && !f.idle {
			c.audit.Handled(f.msg.Partition, f.msg.Offset, f.msg.Time, ids[i], isDead[i])
		}
	}
}

// commit commits next, the offset to resume from per partition, in this generation. A
// failure (a rebalance, a coordinator that moved) keeps them for the next commit:
// delivery is at least once.
//
// With the audit, the counts are published first: an offset is committed only once
// every record below it is counted in the audit topic.
func (c *Consumer) commit(gen *kafka.Generation, next map[int]int64) error {
	if len(next) == 0 {
		return nil
	}
	if c.audit != nil {
		ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
		err := c.audit.Flush(ctx, false)
		cancel()
		if err != nil {
			c.metrics.CommitErrors.Inc()
			c.log.Warn("commit offsets held: the audit counts were not published", zap.Int("partitions", len(next)), zap.Error(err))
			return fmt.Errorf("commit %d partitions: %w", len(next), err)
		}
	}
	offsets := map[string]map[int]int64{c.topic: maps.Clone(next)}
	if err := gen.CommitOffsets(offsets); err != nil {
		c.metrics.CommitErrors.Inc()
		c.log.Warn("commit offsets", zap.Int("partitions", len(next)), zap.Error(err))
		return fmt.Errorf("commit %d partitions: %w", len(next), err)
	}
	clear(next)
	return nil
}

func (c *Consumer) partitionLag(p int) prometheus.Gauge {
	g, ok := c.lag[p]
	if !ok {
		g = c.metrics.ConsumerLag.WithLabelValues(strconv.Itoa(p))
		c.lag[p] = g
	}
	return g
}
