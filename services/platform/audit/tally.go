package audit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/sluice-dev/sluice/services/platform/wait"
)

// Writer is what a Tally publishes with: a *kafka.Writer to the audit topic
// (cluster.NewWriter).
type Writer interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// Opt tunes a Tally.
type Opt interface{ apply(*Tally) }

type optFunc func(*Tally)

func (f optFunc) apply(t *Tally) { f(t) }

// WithWidth sets a bucket's width (default DefaultWidth). Every tier must use the same.
func WithWidth(d time.Duration) Opt { return optFunc(func(t *Tally) { t.width = d.Milliseconds() }) }

// WithInterval sets how often Run publishes (default 5s): what a replica that dies
// can lose of its counts.
func WithInterval(d time.Duration) Opt { return optFunc(func(t *Tally) { t.every = d }) }

// WithEager makes Run publish new counts as soon as they are counted, at most once per
// gap, instead of once per interval: what a replica that dies takes with it shrinks to
// the gap. Processing uses it, so that the events a killed replica handled last are
// counted as duplicates when the next owner handles them again.
func WithEager(gap time.Duration) Opt {
	return optFunc(func(t *Tally) { t.gap, t.kick = gap, make(chan struct{}, 1) })
}

// WithLogger logs failed publishes.
func WithLogger(l *zap.Logger) Opt { return optFunc(func(t *Tally) { t.log = l }) }

// WithClock stamps records with now.
func WithClock(now func() time.Time) Opt { return optFunc(func(t *Tally) { t.now = now }) }

// slot is one partition and bucket.
type slot struct {
	partition int32
	bucket    int64
}

type count struct {
	accepted    int64
	fwd, dead   Ranges
	copies      Ranges
	unranged    int64     // offsets handled beyond MaxRanges
	again       int64     // handlings of an offset already in fwd or dead
	dirty       bool      // changed since it was last published
	lastChanged time.Time // for forgetting buckets the topic no longer keeps
}

// Tally counts one incarnation's events and publishes the counts. Its methods are safe
// for concurrent use.
//
// The invariant: the latest published record of a slot holds every event counted in it
// before the Flush that wrote it began.
type Tally struct {
	tier, incarnation string
	w                 Writer
	width             int64
	every             time.Duration
	gap               time.Duration // WithEager's; kick is signalled on every count
	kick              chan struct{}
	log               *zap.Logger
	now               func() time.Time

	mu     sync.Mutex
	counts map[slot]*count
	seen   map[int32]*idWindow // per partition

	flushMu  sync.Mutex // one Flush at a time, so an older count never lands after a newer
	ended    bool       // a final beat was published: every later beat is final too
	lastBeat time.Time  // beats are published once per interval
	errors   atomic.Int64
}

// New returns a Tally of tier (Ingestion or Processing) for incarnation (see
// Incarnation), publishing with w.
func New(tier, incarnation string, w Writer, opts ...Opt) (*Tally, error) {
	t := &Tally{tier: tier, incarnation: incarnation, w: w, width: DefaultWidth.Milliseconds(), every: 5 * time.Second,
		log: zap.NewNop(), now: time.Now, counts: map[slot]*count{}, seen: map[int32]*idWindow{}}
	for _, o := range opts {
		o.apply(t)
	}
	if t.log == nil {
		t.log = zap.NewNop()
	}
	switch {
	case tier != Ingestion && tier != Processing:
		return nil, fmt.Errorf("audit: tier %q is neither %q nor %q", tier, Ingestion, Processing)
	case incarnation == "":
		return nil, errors.New("audit: no incarnation")
	case w == nil:
		return nil, errors.New("audit: no writer")
	case t.width <= 0:
		return nil, errors.New("audit: a bucket's width must be at least a millisecond")
	case t.every <= 0:
		return nil, errors.New("audit: the publishing interval must be positive")
	case t.kick != nil && (t.gap <= 0 || t.gap > t.every):
		return nil, errors.New("audit: an eager tally's gap must be positive and at most its interval")
	}
	return t, nil
}

// Errors is how many publishes failed.
func (t *Tally) Errors() int64 { return t.errors.Load() }

func (t *Tally) slot(partition int, at time.Time) *count {
	s := slot{int32(partition), bucketOf(at, t.width)}
	c := t.counts[s]
	if c == nil {
		c = &count{}
		t.counts[s] = c
	}
	c.dirty = true
	if t.kick != nil {
		select {
		case t.kick <- struct{}{}:
		default:
		}
	}
	return c
}

// Accepted counts events ingestion acknowledged: each message's Partition and Time
// (its ingestion time) say where it counts.
func (t *Tally) Accepted(msgs []kafka.Message) {
	if len(msgs) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var c *count
	var last slot
	for i := range msgs {
		m := &msgs[i]
		// A request's events share a partition and a time: one lookup for all of them.
		if s := (slot{int32(m.Partition), bucketOf(m.Time, t.width)}); c == nil || s != last {
			c, last = t.slot(m.Partition, m.Time), s
		}
		c.accepted++
	}
}

// Handled counts a record processing forwarded, or dead-lettered, by its partition,
// offset and time (the event's ingestion time), and its event id ("": unknown).
func (t *Tally) Handled(partition int, offset int64, at time.Time, id string, deadLettered bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.slot(partition, at)
	if id != "" {
		w := t.seen[int32(partition)]
		if w == nil {
			w = &idWindow{at: map[string]int64{}, ring: make([]string, idWindowSize)}
			t.seen[int32(partition)] = w
		}
		if w.copyOf(id, offset) && len(c.copies) < MaxRanges {
			c.copies = c.copies.Add(offset)
		}
	}
	if c.fwd.Has(offset) || c.dead.Has(offset) {
		// Read again after a rebalance gave the partition back before a commit.
		c.again++
		return
	}
	r := &c.fwd
	if deadLettered {
		r = &c.dead
	}
	if n := len(*r); n >= MaxRanges && (*r)[n-1][1] != offset {
		c.unranged++ // a new range would grow the record past its bound
		return
	}
	*r = r.Add(offset)
}

// Flush publishes every count that changed since the last Flush, and a beat (final: the
// incarnation stops, with everything published). If the write fails, those counts are
// published by the next Flush.
func (t *Tally) Flush(ctx context.Context, final bool) error {
	t.flushMu.Lock()
	defer t.flushMu.Unlock()
	final = final || t.ended // a tick after the final Flush must not make it look killed
	now := t.now()
	t.mu.Lock()
	var msgs []kafka.Message
	var sent []*count
	for s, c := range t.counts {
		if !c.dirty {
			// Forgotten once the topic has deleted it: only a record older than its
			// retention could count in it again.
			if now.Sub(c.lastChanged) > retention {
				delete(t.counts, s)
			}
			continue
		}
		k := Key{Tier: t.tier, Incarnation: t.incarnation, Partition: int(s.partition), Bucket: s.bucket}
		v := Value{At: now.UnixMilli(), Width: t.width, Accepted: c.accepted, Forwarded: c.fwd, DeadLettered: c.dead, Copies: c.copies, Unranged: c.unranged, Again: c.again}
		msgs = append(msgs, kafka.Message{Key: []byte(k.String()), Value: v.Encode()})
		c.dirty, c.lastChanged = false, now
		sent = append(sent, c)
	}
	t.mu.Unlock()
	beat := final || now.Sub(t.lastBeat) >= t.every
	if beat {
		v := Value{At: now.UnixMilli(), Every: t.every.Milliseconds(), Final: final}
		msgs = append(msgs, kafka.Message{Key: []byte(Key{Tier: t.tier, Incarnation: t.incarnation, Partition: -1}.String()), Value: v.Encode()})
	}
	if len(msgs) == 0 {
		return nil
	}
	if err := t.w.WriteMessages(ctx, msgs...); err != nil {
		t.mu.Lock()
		for _, c := range sent {
			c.dirty = true
		}
		t.mu.Unlock()
		t.errors.Add(1)
		return fmt.Errorf("publish %d audit counts: %w", len(sent), err)
	}
	t.ended = final
	if beat {
		t.lastBeat = now
	}
	return nil
}

// Run publishes every interval (eager: whenever there are new counts, at most once per
// gap) until ctx ends. It does not publish the final counts: call Flush with final once
// nothing more is counted.
func (t *Tally) Run(ctx context.Context) {
	tick := time.NewTicker(t.every)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-t.kick: // nil, so never, unless eager
			if !wait.Sleep(ctx, t.gap) {
				return
			}
		}
		if err := t.Flush(ctx, false); err != nil {
			if !failing && ctx.Err() == nil {
				t.log.Warn("publishing audit counts failed; retried every interval (logged once until it works)", zap.Error(err))
			}
			failing = true
		} else if failing {
			t.log.Info("publishing audit counts works again")
			failing = false
		}
	}
}

// idWindowSize is how many of a partition's last event ids a Tally remembers: a retried
// produce writes its copy a few batches after the first.
const idWindowSize = 8192

// idWindow remembers the offsets of a partition's last event ids.
type idWindow struct {
	at   map[string]int64
	ring []string // the ids in at, oldest at next
	next int
}

// copyOf reports whether id was handled at another offset: a second copy of the event.
// The same offset is the same record read again, which the offset ranges count.
func (w *idWindow) copyOf(id string, offset int64) bool {
	if prev, ok := w.at[id]; ok {
		return prev != offset
	}
	if old := w.ring[w.next]; old != "" {
		delete(w.at, old)
	}
	w.ring[w.next], w.at[id] = id, offset
	w.next = (w.next + 1) % len(w.ring)
	return false
}
