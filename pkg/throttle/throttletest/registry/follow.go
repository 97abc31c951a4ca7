package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// follow reads the store's topic from the start, as a read-only registry: New returns
// once it has read what the topic held when it started (or read nothing new for a
// while: records at the end may have been compacted away), and reading goes on until
// Close. A record it cannot apply stops the reading; FollowErr reports it.
func (s *Server) follow(ctx context.Context, st *store, r replayer) error {
	end, err := endOffset(ctx, st)
	if err != nil {
		return err
	}
	cl, err := st.reader()
	if err != nil {
		return err
	}
	caughtUp := make(chan struct{})
	runCtx, stop := context.WithCancel(context.Background())
	s.stop, s.followed = stop, make(chan struct{})
	go func() {
		defer close(s.followed)
		defer cl.Close()
		signal, quiet := caughtUp, 0
		var next int64 // the offset after the last record applied
		for {
			// A poll that waits in vain ends after a while: the topic may end in
			// offsets the cleaner emptied, which no record will ever reach.
			pollCtx, cancel := context.WithTimeout(runCtx, 500*time.Millisecond)
			fs := cl.PollFetches(pollCtx)
			cancel()
			if runCtx.Err() != nil {
				return
			}
			n := 0
			var applyErr error
			fs.EachRecord(func(rec *kgo.Record) {
				if applyErr != nil {
					return
				}
				if applyErr = r.apply(rec); applyErr == nil {
					next = rec.Offset + 1
					n++
				}
			})
			if applyErr != nil {
				s.followErr.Store(&applyErr)
				return
			}
			if n == 0 {
				quiet++
			} else {
				quiet = 0
			}
			if signal != nil && (next >= end || quiet >= 2) {
				close(signal)
				signal = nil
			}
		}
	}()
	select {
	case <-caughtUp:
		return nil
	case <-s.followed:
		if err := s.FollowErr(); err != nil {
			return err
		}
		return fmt.Errorf("read %s: stopped", st.topic)
	case <-ctx.Done():
		stop()
		<-s.followed
		return fmt.Errorf("read %s up to offset %d: %w", st.topic, end, ctx.Err())
	}
}

// FollowErr is the error that stopped a read-only registry's reading, or nil.
func (s *Server) FollowErr() error {
	if p := s.followErr.Load(); p != nil {
		return *p
	}
	return nil
}

// endOffset is the end of the topic's only partition, 0 while the topic does not exist.
func endOffset(ctx context.Context, st *store) (int64, error) {
	req := kmsg.NewPtrListOffsetsRequest()
	t := kmsg.NewListOffsetsRequestTopic()
	t.Topic = st.topic
	p := kmsg.NewListOffsetsRequestTopicPartition()
	p.Partition, p.Timestamp = 0, -1 // the latest offset
	t.Partitions = append(t.Partitions, p)
	req.Topics = append(req.Topics, t)
	resp, err := req.RequestWith(ctx, st.cl)
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		return 0, nil // not there yet: the mirror creates it
	}
	if err != nil {
		return 0, fmt.Errorf("end offset of %s: %w", st.topic, err)
	}
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			if kerr.ErrorForCode(rp.ErrorCode) == nil {
				return rp.Offset, nil
			}
		}
	}
	return 0, nil // not there yet: the mirror creates it
}
