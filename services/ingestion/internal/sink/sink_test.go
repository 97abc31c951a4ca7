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
	// barrier, when set, holds every call until that many are in WriteMessages at once
	// (and fails them if that does not happen within 5s).
	barrier  int
	arrived  int
	released chan struct{}
}

func newFakeWriter() *fakeWriter {
	return &fakeWriter{written: map[string]int{}, released: make(chan struct{})}
}

func (w *fakeWriter) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	if w.barrier > 0 {
		w.mu.Lock()
		if w.arrived++; w.arrived == w.barrier {
			close(w.released)
		}
		w.mu.Unlock()
		select {
		case <-w.released:
		case <-time.After(5 * time.Second):
			return errors.New("fake writer: the other calls never arrived")
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

// Concurrent requests reach the writer at once, where kafka.Writer gathers them into one
// batch per partition: the sink must not serialize them. The writer here lets no call
// finish before every request is inside it, which a sink that wrote one request at a
// time (or gathered them behind one call) never achieves.
func TestConcurrentRequestsReachTheWriterAtOnce(t *testing.T) {
	const requests = 200
	w := newFakeWriter()
	w.barrier = requests
	s := New(w, Config{Buffer: 10000})
	run(t, s)

	results := make(chan error, requests)
	for i := range requests {
		go func() { results <- s.Write(msgs(fmt.Sprint("r", i), 3)) }()
	}
	timeout := time.After(10 * time.Second)
	for i := range requests {
		select {
		case err := <-results:
			if err != nil {
				t.Fatalf("request: %v", err)
			}
		case <-timeout:
			t.Fatalf("%d of %d requests answered within 10s: the sink does not hand them to the writer at once", i, requests)
		}
	}
	if _, n := w.total(); n != 3*requests {
		t.Fatalf("wrote %d messages, want %d", n, 3*requests)
	}
	if b := s.Buffered(); b != 0 {
		t.Fatalf("buffered %d after every request returned, want 0", b)
	}
}

func TestOutageBuffersThenRefusesAndNothingIsLost(t *testing.T) {
	w := newFakeWriter()
	w.down.Store(true)
	s := New(w, Config{Buffer: 10, Timeout: time.Minute})
	run(t, s)

	// Ten one-event requests fill the buffer and wait for the broker.
	results := make(chan error, 10)
	for i := range 10 {
		go func() { results <- s.Write(msgs(fmt.Sprint("held", i), 1)) }()
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Buffered() < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("buffered %d, want 10", s.Buffered())
		}
		time.Sleep(time.Millisecond)
	}
	// The eleventh is refused at once, and never written.
	if err := s.Write(msgs("refused", 1)); !errors.Is(err, ErrFull) {
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

func TestTimeoutSaysEventsMayHaveBeenWritten(t *testing.T) {
	w := newFakeWriter()
	w.down.Store(true)
	s := New(w, Config{Buffer: 100, Timeout: 200 * time.Millisecond})
	run(t, s)

	// The writer was asked and failed: a produce request that failed may still have been
	// written, so the request must not be told "none written".
	if err := s.Write(msgs("first", 1)); !errors.Is(err, ErrTimeout) || errors.Is(err, ErrNotWritten) {
		t.Fatalf("timed-out request: got %v, want ErrTimeout without ErrNotWritten", err)
	}
	if calls, _ := w.total(); calls < 2 {
		t.Fatalf("%d WriteMessages calls in 200ms with the broker down, want retries", calls)
	}
	w.down.Store(false)
	if err := s.Write(msgs("second", 1)); err != nil {
		t.Fatalf("after the outage: %v", err)
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
	if err := s.Write(msgs("p", 5)); err != nil {
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
	s := New(w, Config{Timeout: time.Minute})
	stop := run(t, s)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if err := s.Write(msgs(fmt.Sprint("c", i), 1)); err != nil {
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
	if err := s.Write(msgs("late", 1)); !errors.Is(err, ErrClosed) {
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
	s := New(w, Config{Timeout: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	results := make(chan error, 3)
	for i := range 3 {
		go func() { results <- s.Write(msgs(fmt.Sprint("x", i), 1)) }()
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
	if err := s.Write(msgs("a", 6)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("6 events into a buffer of 5: got %v, want ErrTooLarge", err)
	}
	big := []kafka.Message{{Key: []byte("acme"), Value: []byte("0123456789")}}
	if err := s.Write(big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("14-byte message with a 10-byte limit: got %v, want ErrTooLarge", err)
	}
}
