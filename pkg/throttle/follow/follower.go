package follow

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
)

// A Follower reads every partition of a compacted topic from its first offset, knows when
// it has caught up with the end of the log as it was at start, and then follows new
// records. It hands each record, in order per partition, to one apply function: the same
// path while rebuilding and while tailing.
//
// It uses no consumer group: every instance reads the whole topic, which is what a local
// copy of a compacted topic needs. the throttle Table is built on a Follower; services use
// Followers directly for other small compacted topics (ingestion's membership topic).
type Follower struct {
	kc    cluster.Config
	topic string
	apply ApplyFunc
	cfg   followerConfig

	ready     chan struct{}
	readyOnce sync.Once

	mu    sync.Mutex // guards parts and started
	parts map[int]*partition

	started atomic.Bool
	fresh   atomic.Bool // false while the broker cannot be reached
}

// ApplyFunc applies one record. It runs on the partition's goroutine, so records of a
// partition are applied in offset order. A returned error means "not now": the Follower
// retries the same record with backoff and reads nothing further from that partition
// until it succeeds. Records that can never be applied (poison) must be counted and
// skipped by the function itself, returning nil. msg's key, value and headers are never
// overwritten, but they share the fetched answer's memory: copy what you keep for long.
type ApplyFunc func(ctx context.Context, msg kafka.Message) error

// Opt configures a Follower (or a Scan): validated by New.
type Opt interface{ apply(*followerConfig) }

type optFunc func(*followerConfig)

func (f optFunc) apply(c *followerConfig) { f(c) }

type followerConfig struct {
	log            *zap.Logger
	pollInterval   time.Duration // watermarks, freshness, stall checks
	metadataEvery  time.Duration // look for added partitions
	stallTimeout   time.Duration
	backoffMin     time.Duration
	backoffMax     time.Duration
	maxWait        time.Duration
	onCaughtUpHook func()
	onPartitions   func(n int) // the topic's partition count, before new partitions are read
}

func defaultFollowerConfig() followerConfig {
	return followerConfig{
		log:           zap.NewNop(),
		pollInterval:  time.Second,
		metadataEvery: 10 * time.Second,
		stallTimeout:  10 * time.Second,
		backoffMin:    100 * time.Millisecond,
		backoffMax:    5 * time.Second,
		maxWait:       500 * time.Millisecond,
	}
}

// WithLogger sets the logger (default: none).
func WithLogger(l *zap.Logger) Opt {
	return optFunc(func(c *followerConfig) {
		if l != nil {
			c.log = l
		}
	})
}

// WithPollInterval sets how often high watermarks are read, which drives lag figures,
// freshness and the log line of a partition that does not advance (default 1s).
func WithPollInterval(d time.Duration) Opt {
	return optFunc(func(c *followerConfig) { c.pollInterval = d })
}

// WithPartitionDiscovery sets how often the topic's partition count is checked, so that
// partitions added later are read too (default 10s).
func WithPartitionDiscovery(d time.Duration) Opt {
	return optFunc(func(c *followerConfig) { c.metadataEvery = d })
}

// WithStallTimeout sets how long a partition may stay behind its high watermark without
// advancing before it is logged as not advancing (default 10s). Nothing is skipped: the
// read loop retries at the same offset.
func WithStallTimeout(d time.Duration) Opt {
	return optFunc(func(c *followerConfig) { c.stallTimeout = d })
}

// WithBackoff sets the reconnect and retry backoff bounds (default 100ms to 5s).
func WithBackoff(lo, hi time.Duration) Opt {
	return optFunc(func(c *followerConfig) { c.backoffMin, c.backoffMax = lo, hi })
}

// WithCaughtUp runs fn once, when every partition has first reached the end offset it
// had at start, before the Follower reports ready: a reader built on a Follower (the
// throttle Table) makes what it built visible there.
func WithCaughtUp(fn func()) Opt {
	return optFunc(func(c *followerConfig) { c.onCaughtUpHook = fn })
}

// WithPartitionCount runs fn with the topic's partition count whenever it is read, before
// the partitions added since are read: a reader that places keys on partitions (the
// throttle Table) learns of added partitions first.
func WithPartitionCount(fn func(n int)) Opt {
	return optFunc(func(c *followerConfig) { c.onPartitions = fn })
}

// New returns a Follower of topic. Run starts it.
func New(kc cluster.Config, topic string, apply ApplyFunc, opts ...Opt) (*Follower, error) {
	return newFollower(kc, topic, apply, buildConfig(opts))
}

func buildConfig(opts []Opt) followerConfig {
	c := defaultFollowerConfig()
	for _, opt := range opts {
		if opt != nil {
			opt.apply(&c)
		}
	}
	return c
}

func newFollower(kc cluster.Config, topic string, apply ApplyFunc, cfg followerConfig) (*Follower, error) {
	if err := kc.Validate(); err != nil {
		return nil, err
	}
	if topic == "" {
		return nil, errors.New("new follower: topic is empty")
	}
	if apply == nil {
		return nil, errors.New("new follower: apply is nil")
	}
	if cfg.pollInterval <= 0 || cfg.stallTimeout <= 0 || cfg.metadataEvery <= 0 || cfg.backoffMin <= 0 || cfg.backoffMax < cfg.backoffMin {
		return nil, errors.New("new follower: intervals must be positive and backoff min <= max")
	}
	return &Follower{
		kc: kc, topic: topic, apply: apply, cfg: cfg,
		ready: make(chan struct{}),
		parts: map[int]*partition{},
	}, nil
}

// partition is the state of one partition's reader. position is the next offset to
// read; end is the log end taken when the partition was first seen, the offset the
// partition must reach to count as caught up.
type partition struct {
	id       int
	end      int64
	position atomic.Int64
	hwm      atomic.Int64
	caughtUp atomic.Bool
	lastMove atomic.Int64  // unix nanos of the last advance of position
	restarts atomic.Int64  // fetches retried after an error
	waiting  atomic.Int64  // offset of the record held for a retry of apply, or -1
	skipped  atomic.Int64  // offsets removed below the log start before they were read
	stalled  atomic.Bool   // logged as not advancing; cleared when it moves
	caught   chan struct{} // closed when the position first reaches end
}

func newPartition(id int, first, end int64) *partition {
	p := &partition{id: id, end: end, caught: make(chan struct{})}
	p.position.Store(first)
	p.waiting.Store(-1)
	p.hwm.Store(end)
	p.lastMove.Store(time.Now().UnixNano())
	if first >= end { // empty: caught up at once, and no message will say so
		p.caughtUp.Store(true)
		close(p.caught)
	}
	return p
}

// Progress is one partition's reading progress.
type Progress struct {
	Partition int
	Position  int64 // next offset to read
	End       int64 // end offset to reach for readiness (taken at start)
	// HighWatermark is the latest known end of the log; Lag is HighWatermark - Position.
	HighWatermark int64
	Lag           int64
	CaughtUp      bool
	Restarts      int64 // fetches retried after an error
	// Waiting is the offset of a record that cannot be applied yet (its schema cannot be
	// fetched): the partition is held there until it can. -1 when nothing waits.
	Waiting int64
	// SkippedOffsets counts offsets that retention or DeleteRecords removed below the
	// log start before this reader got to them.
	SkippedOffsets int64
}

// Progress returns each partition's progress, by partition number.
func (f *Follower) Progress() []Progress {
	f.mu.Lock()
	out := make([]Progress, 0, len(f.parts))
	for _, p := range f.parts {
		pos, hwm := p.position.Load(), p.hwm.Load()
		out = append(out, Progress{
			Partition: p.id, Position: pos, End: p.end, HighWatermark: hwm,
			Lag: max(hwm-pos, 0), CaughtUp: p.caughtUp.Load(), Restarts: p.restarts.Load(),
			Waiting: p.waiting.Load(), SkippedOffsets: p.skipped.Load(),
		})
	}
	f.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Partition < out[j].Partition })
	return out
}

// Ready reports whether every partition has reached the end offset it had at start.
func (f *Follower) Ready() bool {
	select {
	case <-f.ready:
		return true
	default:
		return false
	}
}

// WaitReady blocks until the Follower is ready or ctx ends.
func (f *Follower) WaitReady(ctx context.Context) error {
	select {
	case <-f.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for %s to catch up: %w", f.topic, ctx.Err())
	}
}

// Fresh reports whether the last contact with the broker succeeded. A ready Follower that
// is not fresh serves what it last knew (fail-static).
func (f *Follower) Fresh() bool { return f.fresh.Load() }

// Run reads the topic until ctx ends, then returns nil. It returns an error only for
// misuse (Run called twice). Broker failures are retried forever with backoff.
func (f *Follower) Run(ctx context.Context) error {
	if f.started.Swap(true) {
		return errors.New("follower: Run called twice")
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	cl := f.kc.Client(10 * time.Second)
	tr := f.kc.TransportTTL(f.cfg.metadataEvery / 2) // short, to see partitions added since
	defer tr.CloseIdleConnections()
	cl.Transport = tr
	log := f.cfg.log.With(zap.String("topic", f.topic))

	// The snapshot of end offsets that readiness is measured against.
	backoff := f.cfg.backoffMin
	for {
		err := f.discover(ctx, cl, &wg, log)
		if err == nil {
			break
		}
		f.fresh.Store(false)
		log.Warn("read partitions and end offsets; retrying", zap.Error(err), zap.Duration("backoff", backoff))
		if !sleep(ctx, backoff) {
			return nil
		}
		backoff = min(backoff*2, f.cfg.backoffMax)
	}
	f.fresh.Store(true)
	f.checkReady()

	poll := time.NewTicker(f.cfg.pollInterval)
	defer poll.Stop()
	lastDiscover := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-poll.C:
		}
		if time.Since(lastDiscover) >= f.cfg.metadataEvery {
			lastDiscover = time.Now()
			if err := f.discover(ctx, cl, &wg, log); err != nil && ctx.Err() == nil {
				log.Warn("look for added partitions", zap.Error(err))
			}
		}
		f.watch(ctx, cl, log)
	}
}

// discover lists the topic's partitions and starts a reader for each one not yet read,
// taking its end offset as the point it must reach to count as caught up.
func (f *Follower) discover(ctx context.Context, cl *kafka.Client, wg *sync.WaitGroup, log *zap.Logger) error {
	ids, err := f.partitionIDs(ctx, cl)
	if err != nil {
		return err
	}
	f.mu.Lock()
	var fresh []int
	for _, id := range ids {
		if _, ok := f.parts[id]; !ok {
			fresh = append(fresh, id)
		}
	}
	f.mu.Unlock()
	if len(fresh) == 0 {
		return nil
	}
	offs, err := f.listOffsets(ctx, cl, fresh)
	if err != nil {
		return err
	}
	if f.cfg.onPartitions != nil {
		f.cfg.onPartitions(len(ids))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range fresh {
		p := newPartition(id, offs[id].FirstOffset, offs[id].LastOffset)
		f.parts[id] = p
		if f.started.Load() && len(f.parts) > len(fresh) {
			log.Info("partition added to topic", zap.Int("partition", id))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.readPartition(ctx, p, log.With(zap.Int("partition", id)))
		}()
	}
	return nil
}

// partitionIDs lists the topic's partitions.
func (f *Follower) partitionIDs(ctx context.Context, cl *kafka.Client) ([]int, error) {
	meta, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{f.topic}})
	if err != nil {
		return nil, fmt.Errorf("metadata of %s: %w", f.topic, err)
	}
	var ids []int
	for _, t := range meta.Topics {
		if t.Name != f.topic {
			continue
		}
		if t.Error != nil {
			return nil, fmt.Errorf("metadata of %s: %w", f.topic, t.Error)
		}
		for _, p := range t.Partitions {
			ids = append(ids, p.ID)
		}
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("metadata of %s: topic has no partitions (does it exist?)", f.topic)
	}
	sort.Ints(ids)
	return ids, nil
}

// listOffsets returns first and last offsets of the given partitions, failing when any
// partition reports an error (the first call after a broker restart can).
func (f *Follower) listOffsets(ctx context.Context, cl *kafka.Client, ids []int) (map[int]kafka.PartitionOffsets, error) {
	reqs := make([]kafka.OffsetRequest, 0, 2*len(ids))
	for _, id := range ids {
		reqs = append(reqs, kafka.FirstOffsetOf(id), kafka.LastOffsetOf(id))
	}
	// Read committed: the end of an open transaction is not an end a reader can reach.
	resp, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{
		Topics: map[string][]kafka.OffsetRequest{f.topic: reqs}, IsolationLevel: kafka.ReadCommitted,
	})
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s: %w", f.topic, err)
	}
	out := map[int]kafka.PartitionOffsets{}
	for _, po := range resp.Topics[f.topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("list offsets of %s/%d: %w", f.topic, po.Partition, po.Error)
		}
		out[po.Partition] = po
	}
	for _, id := range ids {
		if _, ok := out[id]; !ok {
			return nil, fmt.Errorf("list offsets of %s/%d: no answer", f.topic, id)
		}
	}
	return out, nil
}

// watch refreshes high watermarks (for lag and freshness) and logs partitions that stay
// behind without advancing. It never moves a position: only the read loop does.
func (f *Follower) watch(ctx context.Context, cl *kafka.Client, log *zap.Logger) {
	f.mu.Lock()
	parts := make([]*partition, 0, len(f.parts))
	ids := make([]int, 0, len(f.parts))
	for id, p := range f.parts {
		parts = append(parts, p)
		ids = append(ids, id)
	}
	f.mu.Unlock()
	offs, err := f.listOffsets(ctx, cl, ids)
	if err != nil {
		if ctx.Err() == nil && f.fresh.Swap(false) {
			log.Warn("broker unreachable; serving last known state", zap.Error(err))
		}
		return
	}
	if !f.fresh.Swap(true) {
		log.Info("broker reachable again")
	}
	now := time.Now()
	for _, p := range parts {
		o := offs[p.id]
		p.hwm.Store(o.LastOffset)
		pos := p.position.Load()
		if pos >= o.LastOffset || now.Sub(time.Unix(0, p.lastMove.Load())) < f.cfg.stallTimeout {
			p.stalled.Store(false)
			continue
		}
		if !p.stalled.Swap(true) {
			log.Warn("partition not advancing behind its high watermark",
				zap.Int("partition", p.id), zap.Int64("position", pos), zap.Int64("high_watermark", o.LastOffset),
				zap.Int64("waiting_offset", p.waiting.Load()))
		}
	}
}

func (f *Follower) markCaughtUp(p *partition, pos int64) {
	if pos >= p.end && !p.caughtUp.Swap(true) {
		close(p.caught)
		f.checkReady()
	}
}

func (f *Follower) checkReady() {
	if f.Ready() {
		return
	}
	f.mu.Lock()
	all := len(f.parts) > 0
	for _, p := range f.parts {
		if !p.caughtUp.Load() {
			all = false
			break
		}
	}
	f.mu.Unlock()
	if all {
		f.readyOnce.Do(func() {
			f.cfg.log.Info("caught up", zap.String("topic", f.topic))
			if f.cfg.onCaughtUpHook != nil {
				f.cfg.onCaughtUpHook()
			}
			close(f.ready)
		})
	}
}

// sleep waits d or until ctx ends; it reports whether the full d passed.
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
