package fleet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
)

// ApplyFunc applies one record of the membership topic (the shape of
// follow.ApplyFunc).
type ApplyFunc = func(ctx context.Context, msg kafka.Message) error

// Source reads the membership topic from offset zero on every partition, then tails it,
// handing every record to the ApplyFunc it was built with. follow.Follower is one; the
// interface keeps this package free of how the topic is read.
type Source interface {
	Run(ctx context.Context) error
	// Ready reports whether every partition has reached the end it had at start.
	Ready() bool
}

// NewSourceFunc builds the Source that feeds apply.
type NewSourceFunc func(apply ApplyFunc) (Source, error)

// Writer writes membership records: a *kafka.Writer on the membership topic, with the
// Murmur2 balancer so a replica's records stay on one partition (NewWriter).
type Writer interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// NewWriter returns the membership topic's writer. Heartbeats are tiny and superseded
// every interval: no batching wait, no retries. Close it with cluster.CloseWriter.
func NewWriter(kc cluster.Config, topic string) (*kafka.Writer, error) {
	return cluster.NewWriter(kc, topic, cluster.WithBatch(time.Millisecond, 1, 0),
		cluster.WithRetries(1, 10*time.Millisecond, 10*time.Millisecond))
}

// Config tunes a Fleet.
type Config struct {
	// Replica is this replica's id, the key of its records. Required.
	Replica string
	// Interval between heartbeats (default 1s).
	Interval time.Duration
	// TTL is how long a heartbeat keeps its sender counted (default 3 × Interval).
	TTL time.Duration
	// Serving reports whether this replica takes events yet (ingestion: its throttle
	// table is caught up). Until it does, it writes no heartbeat: a replica that refuses
	// every event with 503 must not count, or the others would enforce shares of a
	// fleet larger than the one admitting events. Nil means always serving.
	Serving func() bool
	// Clock replaces time.Now, for tests.
	Clock func() time.Time
	Log   *zap.Logger
}

// Fleet heartbeats for this replica and keeps the count of alive replicas.
type Fleet struct {
	cfg     Config
	members *Members
	source  Source
	w       Writer

	size    atomic.Int64 // alive replicas, 0 while unknown
	changed chan struct{}

	beatMu  sync.Mutex // orders heartbeats before the leaving tombstone
	leaving bool
}

// New returns a Fleet that writes with w and reads through the Source newSource builds.
func New(cfg Config, w Writer, newSource NewSourceFunc) (*Fleet, error) {
	if cfg.Replica == "" {
		return nil, errors.New("new fleet: replica id is empty")
	}
	if w == nil || newSource == nil {
		return nil, errors.New("new fleet: writer and source are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 3 * cfg.Interval
	}
	if cfg.TTL <= cfg.Interval {
		return nil, fmt.Errorf("new fleet: ttl %s must exceed the heartbeat interval %s", cfg.TTL, cfg.Interval)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	f := &Fleet{cfg: cfg, members: NewMembers(cfg.Replica), w: w, changed: make(chan struct{}, 1)}
	src, err := newSource(f.apply)
	if err != nil {
		return nil, fmt.Errorf("new fleet: %w", err)
	}
	f.source = src
	return f, nil
}

// Size returns the number of alive replicas, this one included, and whether it is known.
// It is a single atomic load: it is called for every request.
func (f *Fleet) Size() (alive int, known bool) {
	n := f.size.Load()
	return int(n), n > 0
}

// Members returns the membership view.
func (f *Fleet) Members() *Members { return f.members }

// apply is the one path for membership records, while catching up and while tailing.
// Bad heartbeats are logged and skipped: a replica that writes them is not counted, and
// nothing would ever make them readable.
func (f *Fleet) apply(_ context.Context, msg kafka.Message) error {
	key := string(msg.Key)
	if msg.Value == nil {
		f.members.Leave(key)
	} else {
		h, err := DecodeHeartbeat(key, msg.Value)
		if err != nil {
			f.cfg.Log.Warn("skipping bad heartbeat", zap.String("topic", msg.Topic),
				zap.Int("partition", msg.Partition), zap.Int64("offset", msg.Offset), zap.Error(err))
			return nil
		}
		f.members.Observe(h, f.cfg.Clock())
	}
	select {
	case f.changed <- struct{}{}:
	default:
	}
	return nil
}

// Run heartbeats and follows the membership topic until ctx ends, then returns nil. It
// does not write the leaving tombstone: call Leave before ending ctx.
func (f *Fleet) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := f.source.Run(ctx); err != nil {
			f.cfg.Log.Error("membership reader stopped", zap.Error(err))
		}
	}()

	beat := time.NewTicker(f.cfg.Interval)
	defer beat.Stop()
	// Recount often enough that an expired member stops counting well within a second.
	recount := time.NewTicker(min(f.cfg.Interval/4, 250*time.Millisecond))
	defer recount.Stop()

	failing := false
	serving := false
	heartbeat := func() {
		if serving = f.cfg.Serving == nil || f.cfg.Serving(); !serving {
			return
		}
		err := f.beat(ctx)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			failing = true
			f.cfg.Log.Warn("heartbeat failed; enforcing full limits once the membership view goes stale", zap.Error(err))
		case err == nil && failing:
			failing = false
			f.cfg.Log.Info("heartbeat written again")
		}
	}
	heartbeat()
	for {
		select {
		case <-ctx.Done():
			f.size.Store(0)
			return nil
		case <-beat.C:
			heartbeat()
		case <-recount.C:
			if !serving {
				heartbeat() // the first one as soon as this replica serves, not an interval later
			}
		case <-f.changed:
		}
		f.recount()
	}
}

func (f *Fleet) recount() {
	alive, known := f.members.Size(f.cfg.Clock(), f.cfg.TTL)
	if !known || !f.source.Ready() {
		alive = 0
	}
	if old := f.size.Swap(int64(alive)); old != int64(alive) {
		f.cfg.Log.Info("fleet size changed", zap.Int64("from", old), zap.Int("to", alive),
			zap.Bool("known", alive > 0))
	}
}

// beat writes one heartbeat, bounded by the interval so a slow broker cannot pile them
// up.
func (f *Fleet) beat(ctx context.Context) error {
	f.beatMu.Lock()
	defer f.beatMu.Unlock()
	if f.leaving {
		return nil
	}
	h := Heartbeat{Replica: f.cfg.Replica, At: f.cfg.Clock().UTC(), TTLMs: f.cfg.TTL.Milliseconds()}
	v, err := h.Encode()
	if err != nil {
		return fmt.Errorf("encode heartbeat of %s: %w", f.cfg.Replica, err)
	}
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Interval)
	defer cancel()
	if err := f.w.WriteMessages(ctx, kafka.Message{Key: []byte(f.cfg.Replica), Value: v}); err != nil {
		return fmt.Errorf("write heartbeat of %s: %w", f.cfg.Replica, err)
	}
	return nil
}

// Leave writes this replica's tombstone, so the others stop counting it at once instead
// of after the TTL, and stops heartbeats for good.
func (f *Fleet) Leave(ctx context.Context) error {
	f.beatMu.Lock()
	defer f.beatMu.Unlock()
	f.leaving = true
	// A few tries: heartbeats need none (the next one replaces a lost one), but nothing
	// replaces a lost tombstone, and without it the others count this replica for a
	// whole TTL more.
	var err error
	for attempt := range 3 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("write leaving tombstone of %s: %w", f.cfg.Replica, err)
			case <-time.After(100 * time.Millisecond):
			}
		}
		// Value nil is a tombstone on the wire; an empty value would not be.
		if err = f.w.WriteMessages(ctx, kafka.Message{Key: []byte(f.cfg.Replica), Value: nil}); err == nil {
			return nil
		}
	}
	return fmt.Errorf("write leaving tombstone of %s: %w", f.cfg.Replica, err)
}
