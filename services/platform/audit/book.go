package audit

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
)

// Book holds the latest record of every key of the audit topic: what each incarnation
// published. Apply is a follow.ApplyFunc. Its methods are safe for concurrent use.
type Book struct {
	log  *zap.Logger
	keep time.Duration
	now  func() time.Time

	mu      sync.Mutex
	swept   time.Time // when counts older than keep were last dropped
	counts  map[Key]Value
	beats   map[Key]Value
	skipped int64
}

// NewBook returns an empty Book that keeps the counts of the buckets that ended within
// keep (0: all of them).
func NewBook(log *zap.Logger, keep time.Duration) *Book {
	if log == nil {
		log = zap.NewNop()
	}
	return &Book{log: log, keep: keep, now: time.Now, counts: map[Key]Value{}, beats: map[Key]Value{}}
}

// Apply takes one record of the audit topic. A record that is no audit record is
// skipped, counted and logged with its partition and offset.
func (b *Book) Apply(_ context.Context, msg kafka.Message) error {
	k, v, err := parse(msg)
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil {
		b.skipped++
		b.log.Warn("skipping a record of the audit topic that is no audit record",
			zap.Int("partition", msg.Partition), zap.Int64("offset", msg.Offset), zap.Error(err))
		return nil
	}
	m := b.counts
	if k.beat() {
		m = b.beats
	}
	if b.keep > 0 {
		now := b.now()
		horizon := now.Add(-b.keep).UnixMilli()
		if v != nil && !k.beat() && k.Bucket+v.Width < horizon {
			delete(m, k)
			return nil
		}
		if now.Sub(b.swept) > time.Minute {
			b.swept = now
			b.forget(horizon)
		}
	}
	if v == nil {
		delete(m, k)
	} else {
		m[k] = *v
	}
	return nil
}

// Skipped is how many records were no audit record.
func (b *Book) Skipped() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.skipped
}

// forget drops the counts of buckets that ended before horizon (Unix milliseconds).
func (b *Book) forget(horizon int64) {
	for k, v := range b.counts {
		if k.Bucket+v.Width < horizon {
			delete(b.counts, k)
		}
	}
}

// Reconcile compares the tiers in every bucket the book holds (see Reconcile).
func (b *Book) Reconcile(now time.Time, grace time.Duration) []Row {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.keep > 0 {
		b.forget(now.Add(-b.keep).UnixMilli())
	}
	return Reconcile(b.counts, b.beats, now, grace)
}

// Statuses of a Row.
const (
	Complete = "complete" // processing handled exactly the events ingestion accepted
	Short    = "short"    // fewer: events accepted and never handled
	Over     = "over"     // more: events handled that no ingestion replica counted
	Open     = "open"     // still within the grace period: counts may yet arrive
)

// Row is one partition and bucket, reconciled.
type Row struct {
	Partition int       `json:"partition"`
	Bucket    time.Time `json:"bucket"`
	Width     int64     `json:"width_ms"`
	Counts
	Status string `json:"status"`
	// Unpublished: incarnations that stopped without publishing their last counts while
	// this bucket was open (killed). An ingestion one's last events are not in Accepted,
	// so the bucket may be over by as many; a processing one's last events were handled
	// again by the next owner and counted once, so Duplicates may be short by as many.
	Unpublished []string `json:"unpublished,omitempty"`
}

// Counts are a bucket's events by kind, or the sum of several buckets'.
type Counts struct {
	// Accepted: events ingestion acknowledged, summed over its incarnations.
	Accepted int64 `json:"accepted"`
	// Forwarded and DeadLettered: distinct offsets processing handled. An offset both
	// forwarded and dead-lettered (by two readers) counts as forwarded.
	Forwarded    int64 `json:"forwarded"`
	DeadLettered int64 `json:"dead_lettered"`
	// Duplicates: offsets handled again, by another reader, after a restart or after a
	// rebalance that gave the partition back to its reader before a commit; and
	// offsets holding a second copy of an event already handled (a retried produce).
	// Forwarded and DeadLettered include the copies; Missing and Extra do not count them.
	Duplicates int64 `json:"duplicates"`
	// Missing and Extra: Accepted minus what was handled, when positive; or the other way.
	Missing int64 `json:"missing"`
	Extra   int64 `json:"over"`
}

func (c *Counts) add(o Counts) {
	c.Accepted += o.Accepted
	c.Forwarded += o.Forwarded
	c.DeadLettered += o.DeadLettered
	c.Duplicates += o.Duplicates
	c.Missing += o.Missing
	c.Extra += o.Extra
}

// Settled reports whether the row's grace period has passed.
func (r Row) Settled() bool { return r.Status != Open }

// End is when the row's bucket ends.
func (r Row) End() time.Time { return r.Bucket.Add(time.Duration(r.Width) * time.Millisecond) }

type cell struct {
	partition int
	bucket    int64
}

// Reconcile compares, per partition and bucket, the events ingestion accepted with the
// offsets processing forwarded and dead-lettered, from the latest record of every key
// (counts) and every incarnation's beat (beats). A bucket is settled once grace has
// passed since its end: until then it is Open. Rows come in bucket, then partition order.
func Reconcile(counts, beats map[Key]Value, now time.Time, grace time.Duration) []Row {
	type acc struct {
		width     int64
		accepted  int64
		fwd, dead Ranges
		copies    Ranges
		unranged  int64
		handled   int64 // offsets counted, every reader's
	}
	cells := map[cell]*acc{}
	for k, v := range counts {
		c := cell{k.Partition, k.Bucket}
		a := cells[c]
		if a == nil {
			a = &acc{width: v.Width}
			cells[c] = a
		}
		a.width = max(a.width, v.Width)
		a.accepted += v.Accepted
		a.fwd = a.fwd.Union(v.Forwarded)
		a.dead = a.dead.Union(v.DeadLettered)
		a.copies = a.copies.Union(v.Copies)
		a.handled += v.Forwarded.Len() + v.DeadLettered.Len() + v.Unranged + v.Again
		a.unranged += v.Unranged
	}
	dead := killed(beats, now)
	rows := make([]Row, 0, len(cells))
	for c, a := range cells {
		fwd := a.fwd.Len() + a.unranged // forwarded, nearly all: dead letters are few
		dl := a.dead.Minus(a.fwd).Len()
		copies := a.copies.Len()
		diff := a.accepted - (fwd + dl - copies)
		r := Row{Partition: c.partition, Bucket: time.UnixMilli(c.bucket).UTC(), Width: a.width, Counts: Counts{
			Accepted: a.accepted, Forwarded: fwd, DeadLettered: dl, Duplicates: a.handled - fwd - dl + copies,
			Missing: max(diff, 0), Extra: max(-diff, 0)}}
		end := c.bucket + a.width
		for inc, d := range dead {
			// It beat once per interval and published at least that often: what it
			// counted since the interval before its last beat may be unpublished.
			if c.bucket <= d.At+d.Every && end > d.At-d.Every {
				r.Unpublished = append(r.Unpublished, inc)
			}
		}
		slices.Sort(r.Unpublished)
		switch {
		case now.UnixMilli() < end+grace.Milliseconds():
			r.Status = Open
		case diff > 0:
			r.Status = Short
		case diff < 0:
			r.Status = Over
		default:
			r.Status = Complete
		}
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(a, b Row) int {
		if c := a.Bucket.Compare(b.Bucket); c != 0 {
			return c
		}
		return a.Partition - b.Partition
	})
	return rows
}

// killed returns the incarnations that stopped without a final beat, by tier/name:
// their last beat is older than three of their intervals.
func killed(beats map[Key]Value, now time.Time) map[string]Value {
	out := map[string]Value{}
	for k, v := range beats {
		if !v.Final && now.UnixMilli()-v.At > 3*v.Every {
			out[k.Tier+"/"+k.Incarnation] = v
		}
	}
	return out
}

// Totals sums rows.
type Totals struct {
	Buckets map[string]int `json:"buckets"` // by status
	Counts
}

// Sum adds up rows.
func Sum(rows []Row) Totals {
	t := Totals{Buckets: map[string]int{Complete: 0, Short: 0, Over: 0, Open: 0}}
	for _, r := range rows {
		t.Buckets[r.Status]++
		t.add(r.Counts)
	}
	return t
}
