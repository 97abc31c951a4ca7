// Package sink writes accepted events to Kafka: a bounded buffer that batches the events
// of concurrent requests into few produce requests, and answers each request only once
// Kafka has acknowledged its events (or definitely failed to).
//
// Why acknowledge before answering: a 202 then means the events are replicated
// (RequiredAcks: all), so a crash of this replica loses nothing it accepted. Answering
// once an event is merely in memory would be faster, and would lose the buffer on a
// crash. The buffer bounds how many events wait for Kafka, in memory: while the broker is
// away, requests wait for it until WriteTimeout, and once the buffer is full further
// requests get ErrFull (503) at once. Nothing is dropped without its request being told.
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

// Writer is what the sink writes with: a *kafka.Writer with Async false. Concurrent
// calls must be safe.
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
	// Flushers is how many batches are written at once (default 32).
	Flushers int
	// MaxBatch bounds the events handed to one WriteMessages call (default 10000).
	MaxBatch int
	Log      *zap.Logger
}

// Sink is the bounded, batching event writer. Run writes; Write enqueues and waits.
type Sink struct {
	cfg      Config
	w        Writer
	queue    chan *job
	buffered atomic.Int64

	mu      sync.RWMutex // Write holds it shared while it enqueues; Close exclusively
	closed  bool
	closing chan struct{}
}

// job is one request's events. state moves from queued to either claimed (a flusher took
// it) or abandoned (its request gave up first, so it must never be written).
type job struct {
	msgs     []kafka.Message
	deadline time.Time
	state    atomic.Int32
	done     chan error // buffered: the flusher never waits for the request
}

const (
	queued int32 = iota
	claimed
	abandoned
)

// New returns a Sink writing with w. Run must be running for writes to complete.
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
	if cfg.Flushers <= 0 {
		cfg.Flushers = 32
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 10000
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	return &Sink{
		cfg: cfg, w: w,
		// One slot per event: a job holds at least one event and its events are
		// reserved before it is queued, so a send on the queue never blocks.
		queue:   make(chan *job, cfg.Buffer),
		closing: make(chan struct{}),
	}
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
// ErrTimeout after the write timeout; or ctx's error if the caller leaves first (the
// events are then still written: the client that left cannot be told either way).
func (s *Sink) Write(ctx context.Context, msgs []kafka.Message) error {
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
	j := &job{msgs: msgs, deadline: time.Now().Add(s.cfg.Timeout), done: make(chan error, 1)}

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
	s.queue <- j
	s.mu.RUnlock()

	timer := time.NewTimer(s.cfg.Timeout)
	defer timer.Stop()
	select {
	case err := <-j.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
	}
	if j.state.CompareAndSwap(queued, abandoned) {
		// No flusher took it: it will be skipped, so the answer "not written" is true.
		return fmt.Errorf("%w: %w: waited %s in the queue", ErrTimeout, ErrNotWritten, s.cfg.Timeout)
	}
	// A flusher is writing it and fails it by its deadline at the latest.
	select {
	case err := <-j.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops taking events. Run then writes what is buffered and returns.
func (s *Sink) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.closing)
	}
}

// Run writes buffered events until Close has been called and the buffer is empty, or
// until ctx ends (then the events still buffered fail with ErrNotWritten). Use a ctx that
// outlives the HTTP server's shutdown, so that requests being drained get their answer.
func (s *Sink) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for range s.cfg.Flushers {
		wg.Go(func() { s.flush(ctx) })
	}
	wg.Wait()
	// Anything left (ctx ended first) is answered, never silently dropped; Close first so
	// that nothing more is queued behind the drain.
	s.Close()
	for {
		select {
		case j := <-s.queue:
			s.finish(j, fmt.Errorf("%w: shutting down: %w", ErrNotWritten, ctx.Err()))
		default:
			return nil
		}
	}
}

// flush takes jobs off the queue and writes them in batches.
func (s *Sink) flush(ctx context.Context) {
	var batch []*job
	for {
		var first *job
		select {
		case first = <-s.queue:
		case <-ctx.Done():
			return
		case <-s.closing:
			select { // closed: drain what is left, then stop
			case first = <-s.queue:
			default:
				return
			}
		}
		batch = batch[:0]
		events := 0
		if s.claim(first) {
			batch, events = append(batch, first), len(first.msgs)
		}
	fill:
		for events < s.cfg.MaxBatch {
			select {
			case j := <-s.queue:
				if s.claim(j) {
					batch, events = append(batch, j), events+len(j.msgs)
				}
			default:
				break fill
			}
		}
		if len(batch) > 0 {
			s.write(ctx, batch)
		}
	}
}

// claim takes j for writing, or releases an abandoned job's room in the buffer.
func (s *Sink) claim(j *job) bool {
	if j.state.CompareAndSwap(queued, claimed) {
		return true
	}
	s.buffered.Add(-int64(len(j.msgs)))
	return false
}

// finish answers j and frees its room.
func (s *Sink) finish(j *job, err error) {
	s.buffered.Add(-int64(len(j.msgs)))
	j.done <- err
}

// write writes the jobs' messages, retrying what failed until each job's deadline.
// kafka-go reports failures per message (WriteErrors), so a retry resends only those.
func (s *Sink) write(ctx context.Context, jobs []*job) {
	type part struct {
		j       *job
		pending []kafka.Message
	}
	parts := make([]part, len(jobs))
	total := 0
	for i, j := range jobs {
		parts[i] = part{j: j, pending: j.msgs}
		total += len(j.msgs)
	}
	msgs := make([]kafka.Message, 0, total)
	backoff := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		msgs = msgs[:0]
		for _, p := range parts {
			msgs = append(msgs, p.pending...)
		}
		err := s.w.WriteMessages(ctx, msgs...)
		var werrs kafka.WriteErrors
		perMessage := errors.As(err, &werrs) && len(werrs) == len(msgs)
		next := parts[:0]
		off := 0
		for _, p := range parts {
			var failed []kafka.Message
			switch {
			case err == nil:
			case perMessage:
				for k := range p.pending {
					if werrs[off+k] != nil {
						failed = append(failed, p.pending[k])
					}
				}
			default:
				failed = p.pending
			}
			off += len(p.pending)
			if len(failed) == 0 {
				s.finish(p.j, nil)
				continue
			}
			p.pending = failed
			next = append(next, p)
		}
		parts = next
		if len(parts) == 0 {
			return
		}
		now := time.Now()
		next = parts[:0]
		for _, p := range parts {
			switch {
			case ctx.Err() != nil:
				s.finish(p.j, fmt.Errorf("%w: shutting down after %d attempts: %w", ErrTimeout, attempt, err))
			case !now.Before(p.j.deadline):
				s.finish(p.j, fmt.Errorf("%w: %d attempts: %w", ErrTimeout, attempt, err))
			default:
				next = append(next, p)
			}
		}
		parts = next
		if len(parts) == 0 {
			return
		}
		if attempt == 1 {
			s.cfg.Log.Warn("writing events failed; retrying", zap.Int("events", len(msgs)), zap.Error(err))
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Second)
	}
}
