package consume_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/services/platform/audit"
	"github.com/sluice-dev/sluice/services/platform/event"
	"github.com/sluice-dev/sluice/services/processing/internal/consume"
)

// auditTopic is an audit topic in memory that fails while failing is set.
type auditTopic struct {
	failing atomic.Bool
	mu      sync.Mutex
	msgs    []kafka.Message
}

func (a *auditTopic) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	if a.failing.Load() {
		return errors.New("audit topic away")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.msgs = append(a.msgs, msgs...)
	return nil
}

func (a *auditTopic) rows(t *testing.T) []audit.Row {
	b := audit.NewBook(nil, 0)
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, m := range a.msgs {
		if err := b.Apply(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	return b.Reconcile(time.Now().Add(time.Hour), 0)
}

// TestCommitWaitsForTheAuditCounts: the invariant where offsets are committed with the
// audit on: an offset is committed only once every record below it is counted in the
// audit topic. While the audit topic is away the consumer goes on handling and commits
// nothing; once it is back, everything is committed and every record, forwarded or
// dead-lettered, is counted exactly once, and the second copy of an event (its id at
// another offset, as a retried produce writes it) is counted as a duplicate.
func TestCommitWaitsForTheAuditCounts(t *testing.T) {
	c := newCluster(t, 2)
	now := time.Now()
	var msgs []kafka.Message
	for i := range 40 {
		m := eventMsg(t, customers("a", 7)[i%7], now)
		if i%10 == 3 {
			m = kafka.Message{Key: []byte("x"), Value: []byte("not an event")}
		}
		if i == 20 || i == 21 { // one event, twice
			b, _ := event.Encode(&event.Event{ID: "twice", Customer: "acme", IngestedAt: now})
			m = kafka.Message{Key: []byte("acme"), Value: b}
		}
		m.Time = now
		msgs = append(msgs, m)
	}
	c.produce(t, msgs...)

	topic := &auditTopic{}
	topic.failing.Store(true)
	tally, err := audit.New(audit.Processing, "proc-1.test", topic)
	if err != nil {
		t.Fatal(err)
	}
	var handled atomic.Int64
	h := consume.HandlerFunc(func(_ context.Context, items []consume.Item) error {
		handled.Add(int64(len(items)))
		return nil
	})
	r := c.start(t, h, consume.Config{CommitInterval: 20 * time.Millisecond, Backoff: time.Millisecond}, consume.WithAudit(tally))
	deadline := time.Now().Add(30 * time.Second)
	for handled.Load() < 36 {
		if time.Now().After(deadline) {
			t.Fatalf("handled %d of 36 events", handled.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // many commit intervals
	if got := c.committed(t, 2); sum(got) != 0 {
		t.Fatalf("committed %v while the audit counts could not be published; want nothing", got)
	}

	topic.failing.Store(false)
	c.waitCommitted(t, 2, 40)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	s := audit.Sum(topic.rows(t))
	if s.Forwarded != 36 || s.DeadLettered != 4 || s.Duplicates != 1 || tally.Errors() == 0 {
		t.Fatalf("audit %+v, %d failed publishes: want 36 forwarded, 4 dead-lettered, 1 duplicate, and failures counted", s, tally.Errors())
	}
}
