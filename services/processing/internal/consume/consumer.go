// Package consume reads the events topic in a consumer group and hands each event to a
// Handler, at least once: an event's offset is committed only after it was handled or
// written to the dead-letter topic. A poison event (one that does not decode, or that
// the handler keeps failing) is dead-lettered with headers saying why, where from and
// when, so the consumer never stalls on it.
package consume

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/sluice-dev/sluice/pkg/throttle/event"
	"github.com/sluice-dev/sluice/services/processing/internal/metrics"
)

// Reader is the part of a consumer-group *kafka.Reader the Consumer uses. The caller
// owns it and closes it after Run returns.
type Reader interface {
	FetchMessage(ctx context.Context) (kafka.Message, error)
	CommitMessages(ctx context.Context, msgs ...kafka.Message) error
}

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

// WithClock makes the consumer measure event ages and stamp dead letters with now.
func WithClock(now func() time.Time) Option { return optionFunc(func(c *Consumer) { c.now = now }) }

// Consumer runs the fetch, handle, commit loop.
type Consumer struct {
	r        Reader
	dlq      Writer
	h        Handler
	cfg      Config
	observer Observer
	metrics  *metrics.Metrics
	log      *zap.Logger
	now      func() time.Time

	running atomic.Bool
	failing atomic.Bool // the last fetch failed

	lag map[int]prometheus.Gauge // per partition; touched only by Run's goroutine
}

// New returns a consumer of r that hands events to h and dead-letters to dlq.
func New(r Reader, dlq Writer, h Handler, cfg Config, opts ...Option) (*Consumer, error) {
	if r == nil || dlq == nil || h == nil {
		return nil, errors.New("new consumer: reader, dead-letter writer and handler are required")
	}
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	c := &Consumer{r: r, dlq: dlq, h: h, cfg: cfg, now: time.Now, lag: map[int]prometheus.Gauge{}}
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

// Ready reports whether Run is running and its last fetch did not fail.
func (c *Consumer) Ready() bool { return c.running.Load() && !c.failing.Load() }

// Run consumes until ctx is done, then commits the offsets of everything it handled and
// returns. An event being handled when ctx ends is finished (bounded by
// HandlerTimeout); one waiting for a retry is left uncommitted, to be consumed again.
// Run returns nil after a shutdown, or the error of the final commit.
func (c *Consumer) Run(ctx context.Context) (err error) {
	c.running.Store(true)
	defer c.running.Store(false)

	handled := map[int]kafka.Message{} // partition → last handled record
	lastCommit := c.now()
	defer func() {
		// ctx is done by now; the final commit gets its own deadline.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
		defer cancel()
		if cerr := c.commit(cctx, handled); cerr != nil {
			err = fmt.Errorf("final commit: %w", cerr)
		}
	}()

	fetchBackoff := c.cfg.Backoff
	for {
		if len(handled) > 0 && c.now().Sub(lastCommit) >= c.cfg.CommitInterval {
			_ = c.commit(ctx, handled) // logged and counted; retried with the next commit
			lastCommit = c.now()
		}
		// With offsets waiting to be committed, stop waiting for a record when they are
		// due, so that an idle partition does not hold them back.
		fctx, cancel := ctx, context.CancelFunc(func() {})
		if len(handled) > 0 {
			fctx, cancel = context.WithTimeout(ctx, c.cfg.CommitInterval-c.now().Sub(lastCommit))
		}
		msg, ferr := c.r.FetchMessage(fctx)
		cancel()
		if ferr != nil {
			if ctx.Err() != nil {
				return nil
			}
			if fctx != ctx && errors.Is(ferr, context.DeadlineExceeded) {
				continue // commit time
			}
			// kafka-go reports rebalances and broker trouble here and carries on: keep
			// fetching, with a pause so a broker that is away is not hammered.
			c.failing.Store(true)
			c.log.Warn("fetch event", zap.Error(ferr), zap.Duration("retry_in", fetchBackoff))
			if !sleep(ctx, fetchBackoff) {
				return nil
			}
			fetchBackoff = min(2*fetchBackoff, c.cfg.MaxBackoff)
			continue
		}
		c.failing.Store(false)
		fetchBackoff = c.cfg.Backoff

		if !c.process(ctx, msg) {
			return nil // shutdown interrupted it: not committed, consumed again later
		}
		handled[msg.Partition] = msg
	}
}

// commit commits the last handled record of each partition. A failure (a rebalance, a
// coordinator that moved) keeps them for the next commit: delivery is at least once.
func (c *Consumer) commit(ctx context.Context, handled map[int]kafka.Message) error {
	if len(handled) == 0 {
		return nil
	}
	msgs := make([]kafka.Message, 0, len(handled))
	for _, m := range handled {
		msgs = append(msgs, m)
	}
	if err := c.r.CommitMessages(ctx, msgs...); err != nil {
		c.metrics.CommitErrors.Inc()
		c.log.Warn("commit offsets", zap.Int("partitions", len(msgs)), zap.Error(err))
		return fmt.Errorf("commit %d partitions: %w", len(msgs), err)
	}
	clear(handled)
	return nil
}

// process handles one record, or dead-letters it. It returns false when ctx ended before
// the record was done with.
func (c *Consumer) process(ctx context.Context, msg kafka.Message) bool {
	c.partitionLag(msg.Partition).Set(float64(max(msg.HighWaterMark-msg.Offset-1, 0)))

	ev, err := event.Decode(msg.Value)
	if err != nil {
		// Retrying cannot fix bytes: straight to the dead-letter topic.
		return c.deadLetter(ctx, msg, StageDecode, 0, err)
	}
	c.metrics.EventAge.Observe(max(c.now().Sub(ev.IngestedAt), 0).Seconds())
	if c.observer != nil {
		c.observer.Observe(ctx, ev)
	}

	backoff := c.cfg.Backoff
	for attempt := 1; ; attempt++ {
		// An attempt is not cut short by shutdown (ctx), only by its own timeout: work
		// that has begun is finished, then committed.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.HandlerTimeout)
		err = c.h.Handle(actx, ev, msg)
		cancel()
		if err == nil {
			c.metrics.Events.WithLabelValues("handled").Inc()
			return true
		}
		if attempt > c.cfg.Retries || isPermanent(err) {
			return c.deadLetter(ctx, msg, StageHandler, attempt, err)
		}
		if !sleep(ctx, backoff) {
			return false
		}
		backoff = min(2*backoff, c.cfg.MaxBackoff)
	}
}

func (c *Consumer) partitionLag(p int) prometheus.Gauge {
	g, ok := c.lag[p]
	if !ok {
		g = c.metrics.ConsumerLag.WithLabelValues(strconv.Itoa(p))
		c.lag[p] = g
	}
	return g
}

// sleep waits for d, or returns false when ctx ends first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
