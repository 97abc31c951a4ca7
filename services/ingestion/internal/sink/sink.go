// Package sink writes accepted events to Kafka: a bounded buffer in front of a
// kafka.Writer that answers each request only once Kafka has acknowledged its events (or
// definitely failed to).
//
// Why acknowledge before answering: a 202 then means the events are replicated
// (RequiredAcks: all), so a crash of this replica loses nothing it accepted. Answering
// once an event is merely in memory would be faster, and would lose the buffer on a
// crash. The buffer bounds how many events wait for Kafka, in memory: while the broker is
// away, requests wait for it until Timeout, and once the buffer is full further requests
// get ErrFull (503) at once. Nothing is dropped without its request being told.
//
// Each request writes its own events, from its own goroutine: kafka.Writer already
// gathers the messages of concurrent WriteMessages calls into one batch per partition,
// so the produce requests are as few as if the sink gathered them, and each request
// waits only for the batches of its own partitions. (An earlier version gathered
// concurrent requests into one call from a pool of goroutines: every request then
// waited for the slowest partition of all of them, and for two hand-offs between
// goroutines; BenchmarkIngest measured 5-15 % fewer events/s with it.)
//
// Delivery is at least once: kafka-go has no idempotent producer, so a retried batch can
// be written twice, and a request that times out while its batch is in flight may have
// had some of its events written. Events carry an id for consumers to deduplicate.
package sink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
)

// Errors returned by Write.
var (
	// ErrFull: the buffer has no room for the request's events. Nothing was written.
	ErrFull = errors.New("sink: buffer full")
	// ErrClosed: the sink is shutting down. Nothing was written.
	ErrClosed = errors.New("sink: closed")
	// ErrTimeout: Kafka did not acknowledge the events within the write timeout. If the
	// error also wraps ErrNotWritten, none were written; otherwise some may have been.
	ErrTimeout = errors.New("sink: not acknowledged in time")
	// ErrNotWritten: the events were never handed to Kafka.
	ErrNotWritten = errors.New("sink: events not written")
	// ErrTooLarge: one message is larger than MaxMessageBytes, or the request has more
	// events than the whole buffer holds. Nothing was written.
	ErrTooLarge = errors.New("sink: too large")
)

// RecordPartitions wraps the balancer of the writer the sink writes with, so that each
// message Write was given says, once written, which partition it went to (kafka-go
// writes the partition only into its own copies). The audit counts by it.
func RecordPartitions(b kafka.Balancer) kafka.Balancer { return recorder{b} }

type recorder struct{ kafka.Balancer }

// Balance runs on the goroutine of the Write that sent msg, and WriterData points at
// that Write's own message.
func (r recorder) Balance(msg kafka.Message, partitions ...int) int {
	p := r.Balancer.Balance(msg, partitions...)
	if m, ok := msg.WriterData.(*kafka.Message); ok {
		m.Partition = p
	}
	return p
}

// Writer is what the sink writes with: a *kafka.Writer with Async false. Concurrent
// calls must be safe. Once a call has returned nil, the writer holds no reference to the
// messages (kafka.Writer has copied them into the produce request it sent), so callers
// may reuse them; after an error it may still hold them in a batch.
type Writer interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// Config tunes a Sink.
type Config struct {
	// Buffer is the most events held at once, waiting or being written (default 100000).
	Buffer int
	// MaxMessageBytes bounds one message's key plus value (default 1000000), below the
	// broker's limit, so no message can fail the batch it shares with others.
	MaxMessageBytes int
	// Timeout is how long a request's events may wait for an acknowledgement
	// (default 10s).
	Timeout time.Duration
	Log     *zap.Logger
}

// Sink is the bounded event writer. Write writes and waits; Close and Run shut it down.
type Sink struct {
	cfg      Config
	w        Writer
	buffered atomic.Int64

	mu       sync.RWMutex // Write holds it shared while it registers; Close exclusively
	closed   bool
	closing  chan struct{}
	inFlight sync.WaitGroup // Writes past registration; no Add once closed
	abort    context.Context
	stop     context.CancelFunc // ends every write still retrying: Run's ctx ended
	failing  atomic.Bool        // the last write failed: its warning is logged
}

// New returns a Sink writing with w.
func New(w Writer, cfg Config) *Sink {
	if cfg.Buffer <= 0 {
		cfg.Buffer = 100000
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = 1000000
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	abort, stop := context.WithCancel(context.Background())
	return &Sink{cfg: cfg, w: w, closing: make(chan struct{}), abort: abort, stop: stop}
}

// Capacity is the buffer's size in events: a request with more events can never be
// accepted.
func (s *Sink) Capacity() int { return s.cfg.Buffer }

// MaxMessageBytes is the largest key plus value accepted.
func (s *Sink) MaxMessageBytes() int { return s.cfg.MaxMessageBytes }

// Buffered returns the events held now, waiting or being written.
func (s *Sink) Buffered() int64 { return s.buffered.Load() }

// Write hands msgs to Kafka and waits for the acknowledgement. It returns nil once every
// message is acknowledged; ErrFull, ErrClosed or ErrTooLarge at once (nothing written);
// or ErrTimeout after Timeout, or once Run's context has ended (the events may then have
// been written, unless the error also wraps ErrNotWritten).
//
// Write takes no context: a client that leaves does not stop the write, so what it was
// sent is still written, as it would be had the client stayed for its answer. Once
// Write has returned nil, msgs and the bytes they point to are the caller's again, and
// each message's Partition is the one it was written to when the writer's balancer is
// wrapped by RecordPartitions.
func (s *Sink) Write(msgs []kafka.Message) error {
	n := int64(len(msgs))
	if n == 0 {
		return nil
	}
	if n > int64(s.cfg.Buffer) {
		return fmt.Errorf("%w: %d events, the buffer holds %d", ErrTooLarge, n, s.cfg.Buffer)
	}
	for i := range msgs {
		if size := len(msgs[i].Key) + len(msgs[i].Value); size > s.cfg.MaxMessageBytes {
			return fmt.Errorf("%w: event %d is %d bytes, at most %d", ErrTooLarge, i, size, s.cfg.MaxMessageBytes)
		}
	}

	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	for {
		cur := s.buffered.Load()
		if cur+n > int64(s.cfg.Buffer) {
			s.mu.RUnlock()
			return ErrFull
		}
		if s.buffered.CompareAndSwap(cur, cur+n) {
			break
		}
	}
	s.inFlight.Add(1)
	s.mu.RUnlock()
	for i := range msgs {
		msgs[i].WriterData = &msgs[i]
	}
	defer s.inFlight.Done()
	defer s.buffered.Add(-n)
	return s.write(msgs, time.Now().Add(s.cfg.Timeout))
}

// Close stops taking events. Run then waits for the writes in flight and returns.
func (s *Sink) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.closing)
	}
}

// Run returns once Close has been called and every write in flight has been answered.
// If ctx ends first, writes still waiting for Kafka stop retrying and fail with
// ErrTimeout, and Run returns once they have. Use a ctx that outlives the HTTP server's
// shutdown, so that requests being drained get their answer.
func (s *Sink) Run(ctx context.Context) error {
	select {
	case <-s.closing:
	case <-ctx.Done():
		s.Close() // nothing more is taken behind the writes being stopped
	}
	drained := make(chan struct{})
	go func() {
		s.inFlight.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-ctx.Done():
		s.stop()
		<-drained
	}
	return nil
}

// write writes msgs, retrying those that failed until deadline. kafka-go reports failures
// per message (WriteErrors), so a retry resends only those.
func (s *Sink) write(msgs []kafka.Message, deadline time.Time) error {
	ctx, cancel := context.WithDeadline(s.abort, deadline)
	defer cancel()
	pending := msgs
	backoff := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		if ctx.Err() != nil && attempt == 1 {
			return fmt.Errorf("%w: %w: shutting down", ErrTimeout, ErrNotWritten)
		}
		err := s.w.WriteMessages(ctx, pending...)
		if err == nil {
			s.recovered()
			return nil
		}
		var werrs kafka.WriteErrors
		if errors.As(err, &werrs) && len(werrs) == len(pending) {
			var failed []kafka.Message
			for k := range pending {
				if werrs[k] != nil {
					failed = append(failed, pending[k])
				}
			}
			if len(failed) == 0 {
				s.recovered()
				return nil
			}
			pending = failed
		}
		if s.failing.CompareAndSwap(false, true) {
			// Once per outage, not once per request: during one, every request fails.
			s.cfg.Log.Warn("writing events failed; requests retry until their timeout (logged once until a write succeeds)",
				zap.Int("events", len(pending)), zap.Error(err))
		}
		select {
		case <-ctx.Done():
			if s.abort.Err() != nil {
				return fmt.Errorf("%w: shutting down after %d attempts: %w", ErrTimeout, attempt, err)
			}
			return fmt.Errorf("%w: %d attempts: %w", ErrTimeout, attempt, err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Second)
	}
}

// recovered logs the end of an outage whose start write logged.
func (s *Sink) recovered() {
	if s.failing.Load() && s.failing.CompareAndSwap(true, false) {
		s.cfg.Log.Info("writing events works again")
	}
}
