package follow

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
)

// ErrRetry, wrapped in the error of a Scan's function, asks for the record to be handed
// over again later (the throttle codec's registry errors wrap it) instead of ending the
// scan.
var ErrRetry = errors.New("follow: retry this record later")

// Range is the part of a partition a Scan read: from its first offset to the end
// offset it had when the scan started.
type Range struct {
	Partition  int
	First, End int64
}

// Scan reads each partition of topic, in partition order, from its first offset to the
// end offset it had when Scan started, and hands every record below that end to fn, in
// offset order. It reads with the Follower's loop, so it passes over nothing the log
// holds (empty and compacted batches, transaction markers, aborted transactions and a
// moved log start are handled as there). An error from fn ends the scan with it, except
// one wrapping ErrRetry: the record is then retried with backoff, as a Follower does,
// and the scan waits at it until ctx ends.
//
// Use it for one-off reads of a snapshot (dumps); a Follower or a Table keeps following.
func Scan(ctx context.Context, kc cluster.Config, topic string, fn func(kafka.Message) error, opts ...Opt) ([]Range, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var fnErr, waitErr error // waitErr: why the record in hand is being retried
	var end int64            // the partition being read's end: records from it on were written later
	apply := func(_ context.Context, msg kafka.Message) error {
		if fnErr != nil || msg.Offset >= end {
			return nil
		}
		err := fn(msg)
		waitErr = err
		if errors.Is(err, ErrRetry) {
			return err
		}
		if err != nil {
			fnErr = err
			cancel()
		}
		return nil
	}
	f, err := newFollower(kc, topic, apply, buildConfig(opts))
	if err != nil {
		return nil, err
	}
	cl := kc.Client(10 * time.Second)
	defer cl.Transport.(*kafka.Transport).CloseIdleConnections()
	ids, err := f.partitionIDs(ctx, cl)
	if err != nil {
		return nil, err
	}
	offs, err := f.listOffsets(ctx, cl, ids)
	if err != nil {
		return nil, err
	}
	ranges := make([]Range, 0, len(ids))
	for _, id := range ids {
		ranges = append(ranges, Range{Partition: id, First: offs[id].FirstOffset, End: offs[id].LastOffset})
	}
	for _, r := range ranges {
		p := newPartition(r.Partition, r.First, r.End)
		end = r.End
		pctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { // the read loop of this partition, ended below
			defer close(done)
			f.readPartition(pctx, p, f.cfg.log)
		}()
		select {
		case <-p.caught:
		case <-ctx.Done():
		}
		stop()
		<-done
		if fnErr != nil {
			return ranges, fnErr
		}
		if err := ctx.Err(); err != nil {
			if waitErr != nil {
				return ranges, fmt.Errorf("scan %s: %w (gave up: %w)", topic, waitErr, err)
			}
			return ranges, err
		}
	}
	return ranges, nil
}
