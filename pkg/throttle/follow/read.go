package follow

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"
	fetchAPI "github.com/segmentio/kafka-go/protocol/fetch"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/pkg/throttle/internal/fetch"
)

// The read loop of one partition. It sends Fetch requests itself (fetch.go) instead of
// using kafka-go's Reader, because a Reader cannot get past a fetch answered with nothing
// but an empty batch, filters no aborted transaction, and may hand out a buffered message
// after its read was cancelled (KAFKA-NOTES, kafka-go 5, 10, 11).
//
// The invariant, kept wherever the position moves: the position moves forward only over
// offsets whose record was applied (or counted as poison by apply), offsets that hold no
// record the broker serves (the gaps compaction leaves inside and between batches,
// transaction markers, records of aborted transactions), and offsets below the log start
// when retention or DeleteRecords removed them (counted in SkippedOffsets).

const (
	// fetchMaxBytes is the Java consumer's max.partition.fetch.bytes default: a fetch's
	// records are applied while still in cache, and the partitions' fetches interleave.
	fetchMaxBytes = 1 << 20
	// isolationReadCommitted stops fetches at the last stable offset and returns the
	// aborted transactions whose records the loop must drop.
	isolationReadCommitted = 1
	// Kafka's control record types (the key of a transaction marker).
	controlAbort = 0
)

// partReader fetches one partition with a transport of its own, so that a leader change
// seen by this partition refreshes only its metadata.
type partReader struct {
	kc    cluster.Config
	topic string
	part  int
	tr    *kafka.Transport
}

func newPartReader(kc cluster.Config, topic string, part int) *partReader {
	return &partReader{kc: kc, topic: topic, part: part, tr: kc.Transport()}
}

func (r *partReader) close() { r.tr.CloseIdleConnections() }

// reset drops the connections and cached metadata, so the next fetch asks the cluster
// again where the partition's leader is.
func (r *partReader) reset() {
	r.tr.CloseIdleConnections()
	r.tr = r.kc.Transport()
}

// fetch asks the partition's leader for the batches at offset, waiting up to maxWait for
// a record when there is none yet.
func (r *partReader) fetch(ctx context.Context, offset int64, maxWait time.Duration) (*fetched, error) {
	ctx, cancel := context.WithTimeout(ctx, maxWait+10*time.Second)
	defer cancel()
	m, err := r.tr.RoundTrip(ctx, r.kc.Addr(), &fetchRequest{clientID: r.kc.ClientName(), Request: &fetchAPI.Request{
		ReplicaID:      -1,
		MaxWaitTime:    int32(maxWait / time.Millisecond),
		MinBytes:       1,
		MaxBytes:       fetchMaxBytes,
		IsolationLevel: isolationReadCommitted,
		SessionID:      -1,
		SessionEpoch:   -1,
		Topics: []fetchAPI.RequestTopic{{
			Topic: r.topic,
			Partitions: []fetchAPI.RequestPartition{{
				Partition: int32(r.part), CurrentLeaderEpoch: -1, FetchOffset: offset,
				LogStartOffset: -1, PartitionMaxBytes: fetchMaxBytes,
			}},
		}},
	}})
	if err != nil {
		return nil, fmt.Errorf("fetch %s/%d@%d: %w", r.topic, r.part, offset, r.kc.Explain(err))
	}
	res, ok := m.(*fetchResponse)
	if !ok {
		return nil, fmt.Errorf("fetch %s/%d@%d: unexpected answer %T", r.topic, r.part, offset, m)
	}
	p, err := partitionOf(res.FetchResponse, r.topic, r.part)
	if err != nil {
		return nil, fmt.Errorf("fetch %s/%d@%d: %w", r.topic, r.part, offset, err)
	}
	batches, partial, err := fetch.Batches(p.RecordBatches)
	if err != nil {
		return nil, fmt.Errorf("fetch %s/%d@%d: %w", r.topic, r.part, offset, err)
	}
	return &fetched{HighWatermark: p.HighWatermark, Aborted: p.AbortedTransactions, Batches: batches, Partial: partial}, nil
}

// readPartition reads one partition from its position until ctx ends. Errors are retried
// with backoff at the same position; nothing is passed over on any path.
func (f *Follower) readPartition(ctx context.Context, p *partition, log *zap.Logger) {
	r := newPartReader(f.kc, f.topic, p.id)
	defer func() { r.close() }()
	backoff := f.cfg.backoffMin
	for ctx.Err() == nil {
		err := f.readOnce(ctx, r, p, log)
		if err == nil {
			backoff = f.cfg.backoffMin
			continue
		}
		if ctx.Err() != nil {
			return
		}
		p.restarts.Add(1)
		switch {
		case errors.Is(err, kafka.OffsetOutOfRange):
			err = f.outOfRange(ctx, p, log)
		case isLeaderError(err):
			r.reset()
		}
		if err != nil {
			log.Warn("fetch failed; retrying at the same offset", zap.Error(err),
				zap.Int64("offset", p.position.Load()), zap.Duration("backoff", backoff))
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, f.cfg.backoffMax)
		}
	}
}

// isLeaderError reports errors after which the partition's leader should be looked up
// again (kafka-go's transport refreshes its metadata only on a timer).
func isLeaderError(err error) bool {
	for _, e := range []kafka.Error{kafka.NotLeaderForPartition, kafka.LeaderNotAvailable,
		kafka.UnknownTopicOrPartition, kafka.FencedLeaderEpoch, kafka.UnknownLeaderEpoch,
		kafka.ReplicaNotAvailable, kafka.KafkaStorageError} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ke kafka.Error
	return !errors.As(err, &ke) // a network error: the broker may be gone for good
}

// readOnce fetches at the position and applies what the answer holds, moving the position
// as the invariant at the top of this file allows.
func (f *Follower) readOnce(ctx context.Context, r *partReader, p *partition, log *zap.Logger) error {
	pos := p.position.Load()
	res, err := r.fetch(ctx, pos, f.cfg.maxWait)
	if err != nil {
		return err
	}
	f.fresh.Store(true)
	if res.HighWatermark > p.hwm.Load() {
		p.hwm.Store(res.HighWatermark)
	}
	if len(res.Batches) == 0 {
		if res.Partial { // brokers since Kafka 0.10.1 return a first batch whole, whatever its size
			return fmt.Errorf("fetch %s/%d@%d: the answer holds only part of a batch", f.topic, p.id, pos)
		}
		f.markCaughtUp(p, pos)
		return nil
	}
	aborted := abortedTxns{list: res.Aborted}
	for i := range res.Batches {
		b := &res.Batches[i]
		aborted.begin(b.Base)
		switch {
		case b.Control():
			// A transaction marker: never data.
			if b.ControlType() == controlAbort {
				aborted.end(b.ProducerID)
			}
		case b.Transactional() && aborted.active[b.ProducerID]:
			// Records of an aborted transaction: never applied.
		default:
			err := b.Each(func(offset int64, rec *kmsg.Record) error {
				if offset < pos {
					return nil // a batch may start before the offset fetched
				}
				msg := f.message(p.id, b, offset, rec, res.HighWatermark)
				if err := f.applyWithRetry(ctx, p, msg, log); err != nil {
					return err // ctx ended: the position stays on this record
				}
				pos = offset + 1
				f.advance(p, pos)
				return nil
			})
			if err != nil {
				return err
			}
		}
		// Every record of the batch was applied, or is a marker or aborted: the offsets
		// left up to the batch's last hold no record (compaction removed them).
		pos = max(pos, b.Last+1)
		f.advance(p, pos)
	}
	return nil
}

// advance moves the position to pos (never backwards) and records the move.
func (f *Follower) advance(p *partition, pos int64) {
	if pos <= p.position.Load() {
		return
	}
	p.position.Store(pos)
	p.lastMove.Store(time.Now().UnixNano())
	f.markCaughtUp(p, pos)
}

// message turns a fetched record into the kafka.Message apply takes. A null value stays
// nil (a tombstone); an empty one is a non-nil empty slice, which is not a tombstone.
func (f *Follower) message(part int, b *fetch.Batch, offset int64, rec *kmsg.Record, hwm int64) kafka.Message {
	msg := kafka.Message{Topic: f.topic, Partition: part, Offset: offset, Time: b.Time(rec), HighWaterMark: hwm,
		Key: rec.Key, Value: rec.Value}
	for _, h := range rec.Headers {
		msg.Headers = append(msg.Headers, kafka.Header{Key: h.Key, Value: h.Value})
	}
	return msg
}

// abortedTxns follows the aborted transactions a read-committed fetch lists: a producer's
// transactional batches are dropped from the transaction's first offset until its abort
// marker.
type abortedTxns struct {
	list   []kmsg.FetchResponseTopicPartitionAbortedTransaction
	active map[int64]bool
}

// begin marks the transactions that have begun at or before offset. Every batch calls
// it, markers too: an abort marker whose records compaction removed still ends its
// transaction, and must not leave it open for the producer's next one.
func (a *abortedTxns) begin(offset int64) {
	// The list is not promised in order: take every entry that has begun.
	a.list = slices.DeleteFunc(a.list, func(t kmsg.FetchResponseTopicPartitionAbortedTransaction) bool {
		if t.FirstOffset > offset {
			return false
		}
		if a.active == nil {
			a.active = map[int64]bool{}
		}
		a.active[t.ProducerID] = true
		return true
	})
}

// end closes the producer's aborted transaction at its abort marker.
func (a *abortedTxns) end(producer int64) { delete(a.active, producer) }

// outOfRange repositions a partition whose position left the log: below the log start
// (records removed by retention or DeleteRecords) it moves to the start and counts the
// offsets passed over; above the end (the broker lost records) it re-reads from the start.
func (f *Follower) outOfRange(ctx context.Context, p *partition, log *zap.Logger) error {
	cl := f.kc.Client(10 * time.Second)
	defer cl.Transport.(*kafka.Transport).CloseIdleConnections()
	offs, err := f.listOffsets(ctx, cl, []int{p.id})
	if err != nil {
		return err
	}
	o, pos := offs[p.id], p.position.Load()
	switch {
	case pos > o.LastOffset:
		log.Error("partition is shorter than what was read: the broker lost records; re-reading from its start",
			zap.Int64("position", pos), zap.Int64("log_end", o.LastOffset))
		p.position.Store(o.FirstOffset)
	case pos < o.FirstOffset:
		p.skipped.Add(o.FirstOffset - pos)
		log.Warn("records below the log start were removed before they were read; resuming at the log start",
			zap.Int64("position", pos), zap.Int64("log_start", o.FirstOffset), zap.Int64("skipped_offsets", o.FirstOffset-pos))
		f.advance(p, o.FirstOffset)
	}
	return nil
}

// applyWithRetry applies msg, retrying with backoff while apply says "not now". The
// partition is held at the record meanwhile: nothing after it is read, and the position
// (so readiness) waits.
func (f *Follower) applyWithRetry(ctx context.Context, p *partition, msg kafka.Message, log *zap.Logger) error {
	backoff := f.cfg.backoffMin
	defer p.waiting.Store(-1)
	for {
		err := f.apply(ctx, msg)
		if err == nil {
			return nil
		}
		if p.waiting.Swap(msg.Offset) != msg.Offset {
			log.Warn("cannot apply record now; holding the partition at it and retrying",
				zap.Int("partition", msg.Partition), zap.Int64("offset", msg.Offset), zap.Error(err))
		}
		if !sleep(ctx, backoff) {
			return ctx.Err()
		}
		backoff = min(backoff*2, f.cfg.backoffMax)
	}
}
