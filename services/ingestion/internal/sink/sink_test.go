package sink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// fakeWriter records what it is asked to write. While down, every call fails as a
// broker outage does.
type fakeWriter struct {
	mu      sync.Mutex
	calls   int
	written map[string]int // message value → times written
	down    atomic.Bool
	// failOnce fails each message whose value is in it once, per message
	// (kafka.WriteErrors), to test partial failures.
	failOnce map[string]bool
	delay    time.Duration
}

func newFakeWriter() *fakeWriter { return &fakeWriter{written: map[string]int{}} }

func (w *fakeWriter) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	if w.delay > 0 {
		select {
		case <-time.After(w.delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls++
	if w.down.Load() {
		return errors.New("dial tcp 127.0.0.1:9092: connect: connection refused")
	}
	var werrs kafka.WriteErrors
	for i, m := range msgs {
		if w.failOnce[string(m.Value)] {
			delete(w.failOnce, string(m.Value))
			if werrs == nil {
				werrs = make(kafka.WriteErrors, len(msgs))
			}
			werrs[i] = kafka.NotLeaderForPartition
			continue
		}
		w.written[string(m.Value)]++
	}
	if werrs != nil {
		return werrs
	}
	return nil
}

func (w *fakeWriter) count(v string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.written[v]
}

func (w *fakeWriter) total() (calls, messages int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, n := range w.written {
		messages += n
	}
	return w.calls, messages
}

func msgs(prefix string, n int) []kafka.Message {
	out := make([]kafka.Message, n)
	for i := range out {
		out[i] = kafka.Message{Key: []byte("acme"), Value: fmt.Appendf(nil, "%s-%d", prefix, i)}
	}
	return out
}

// run starts s.Run and returns a function that closes the sink and waits for Run.
func run(t *testing.T, s *Sink) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Run(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			s.Close()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Error("sink did not drain within 10s")
			}
			cancel()
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

func TestWriteBatchesConcurrentRequests(t *testing.T) {
	w := newFakeWriter()
	w.delay = 2 * time.Millisecond // like a BatchTimeout: requests pile up meanwhile
	s := New(w, Config{Buffer: 10000, Flushers: 2})
	run(t, s)

	const requests = 200
	var wg sync.WaitGroup
	for i := range requests {
		wg.Go(func() {
			if err := s.Write(context.Background(), msgs(fmt.Sprint("r", i), 3)); err != nil {
				t.Errorf("request %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	calls, n := w.total()
	if n != 3*requests {
		t.Fatalf("wrote %d messages, want %d", n, 3*requests)
	}
	if calls >= requests/2 {
		t.Fatalf("%d WriteMessages calls for %d concurrent requests, want far fewer (batched)", calls, requests)
	}
	t.Logf("%d requests written in %d calls", requests, calls)
	if b := s.Buffered(); b != 0 {
		t.Fatalf("buffered %d after every request returned, want 0", b)
	}
}

func TestOutageBuffersThenRefusesAndNothingIsLost(t *testing.T) {
	w := newFakeWriter()
	w.down.Store(true)
	s := New(w, Config{Buffer: 10, Timeout: time.Minute, Flushers: 1})
	run(t, s)

	// Ten one-event requests fill the buffer and wait for the broker.
	results := make(chan error, 10)
	for i := range 10 {
		go func() { results <- s.Write(context.Background(), msgs(fmt.Sprint("held", i), 1)) }()
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Buffered() < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("buffered %d, want 10", s.Buffered())
		}
		time.Sleep(time.Millisecond)
	}
	// The eleventh is refused at once, and never written.
	if err := s.Write(context.Background(), msgs("refused", 1)); !errors.Is(err, ErrFull) {
		t.Fatalf("write with a full buffer: got %v, want ErrFull", err)
	}

	w.down.Store(false) // the broker is back
	for range 10 {
		if err := <-results; err != nil {
			t.Fatalf("held request: got %v, want nil once the broker is back", err)
		}
	}
	for i := range 10 {
		if n := w.count(fmt.Sprint("held", i, "-0")); n != 1 {
			t.Fatalf("held%d written %d times, want 1", i, n)
		}
	}
	if n := w.count("refused-0"); n != 0 {
		t.Fatalf("refused event written %d times, want 0", n)
	}
}

func TestTimeoutTellsWhetherEventsWereWritten(t *testing.T) {
	w := newFakeWriter()
	w.down.Store(true)
	s := New(w, Config{Buffer: 100, Timeout: 200 * time.Millisecond, Flushers: 1, MaxBatch: 1})
	run(t, s)

	// With one flusher taking one event per batch, the first request is being written
	// (and retried) while the second waits in the queue.
	first := make(chan error, 1)
	go func() { first <- s.Write(context.Background(), msgs("first", 1)) }()
	time.Sleep(50 * time.Millisecond)
	second := s.Write(context.Background(), msgs("second", 1))
	if !errors.Is(second, ErrTimeout) || !errors.Is(second, ErrNotWritten) {
		t.Fatalf("queued request: got %v, want ErrTimeout and ErrNotWritten", second)
	}
	if err := <-first; !errors.Is(err, ErrTimeout) || errors.Is(err, ErrNotWritten) {
		t.Fatalf("in-flight request: got %v, want ErrTimeout without ErrNotWritten (it may have been written)", err)
	}
	w.down.Store(false)
	if err := s.Write(context.Background(), msgs("third", 1)); err != nil {
		t.Fatalf("after the outage: %v", err)
	}
	if n := w.count("second-0"); n != 0 {
		t.Fatalf("abandoned request written %d times, want 0", n)
	}
	if b := s.Buffered(); b != 0 {
		t.Fatalf("buffered %d, want 0", b)
	}
}

func TestPartialFailureRetriesOnlyFailedMessages(t *testing.T) {
	w := newFakeWriter()
	w.failOnce = map[string]bool{"p-1": true, "p-3": true}
	s := New(w, Config{})
	run(t, s)
	if err := s.Write(context.Background(), msgs("p", 5)); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if n := w.count(fmt.Sprint("p-", i)); n != 1 {
			t.Fatalf("p-%d written %d times, want exactly 1", i, n)
		}
	}
}

func TestCloseFlushesThenRefuses(t *testing.T) {
	w := newFakeWriter()
	w.down.Store(true) // hold everything in the buffer until Close
	s := New(w, Config{Flushers: 1, Timeout: time.Minute})
	stop := run(t, s)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if err := s.Write(context.Background(), msgs(fmt.Sprint("c", i), 1)); err != nil {
				t.Errorf("request %d: %v", i, err)
			}
		})
	}
	for s.Buffered() < 20 {
		time.Sleep(time.Millisecond)
	}
	stopped := make(chan struct{})
	go func() { defer close(stopped); stop() }() // Close, then wait for Run to drain
	time.Sleep(50 * time.Millisecond)
	if err := s.Write(context.Background(), msgs("late", 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: got %v, want ErrClosed", err)
	}
	w.down.Store(false)
	<-stopped
	wg.Wait()
	if _, n := w.total(); n != 20 {
		t.Fatalf("wrote %d before Run returned, want 20", n)
	}
}

func TestRunEndingAnswersWhatIsLeft(t *testing.T) {
	w := newFakeWriter()
	w.down.Store(true)
	s := New(w, Config{Timeout: time.Minute, Flushers: 1, MaxBatch: 1})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	results := make(chan error, 3)
	for i := range 3 {
		go func() { results <- s.Write(context.Background(), msgs(fmt.Sprint("x", i), 1)) }()
	}
	for s.Buffered() < 3 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	for range 3 {
		if err := <-results; err == nil {
			t.Fatal("a request got nil after Run ended with the broker down, want an error")
		}
	}
	if b := s.Buffered(); b != 0 {
		t.Fatalf("buffered %d after Run, want 0", b)
	}
}

func TestTooLarge(t *testing.T) {
	s := New(newFakeWriter(), Config{Buffer: 5, MaxMessageBytes: 10})
	if err := s.Write(context.Background(), msgs("a", 6)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("6 events into a buffer of 5: got %v, want ErrTooLarge", err)
	}
	big := []kafka.Message{{Key: []byte("acme"), Value: []byte("0123456789")}}
	if err := s.Write(context.Background(), big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("14-byte message with a 10-byte limit: got %v, want ErrTooLarge", err)
	}
}
