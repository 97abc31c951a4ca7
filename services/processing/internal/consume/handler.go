package consume

import (
	"context"
	"errors"
	"fmt"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/services/platform/event"
)

// Item is one decoded event and the record it came in, for its key, headers and value.
type Item struct {
	Event event.Event
	Msg   kafka.Message
}

// Handler does the work for a batch of decoded events, given in the order they were read
// (offset order within each partition). It returns nil when every event was handled.
// When only some failed it returns Failures, one error per item (nil: handled); any
// other error fails the whole batch. A failed event is retried alone with backoff, up to
// the consumer's retry limit, unless its error is Permanent; then it goes to the
// dead-letter topic. Handle may see an event again (after a retry, or after a restart
// before the offset was committed): it must be safe to repeat.
type Handler interface {
	Handle(ctx context.Context, items []Item) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, items []Item) error

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, items []Item) error { return f(ctx, items) }

// PerEvent adapts a function that handles one event at a time to Handler: it is called
// for each item in order, and its errors are reported as Failures.
func PerEvent(f func(ctx context.Context, ev event.Event, msg kafka.Message) error) Handler {
	return HandlerFunc(func(ctx context.Context, items []Item) error {
		errs := make(Failures, len(items))
		failed := false
		for i, it := range items {
			if errs[i] = f(ctx, it.Event, it.Msg); errs[i] != nil {
				failed = true
			}
		}
		if failed {
			return errs
		}
		return nil
	})
}

// Failures reports which events of a batch failed: one error per item, in order, nil
// for the events handled.
type Failures []error

func (f Failures) Error() string {
	n, first := 0, error(nil)
	for _, err := range f {
		if err != nil {
			if first == nil {
				first = err
			}
			n++
		}
	}
	return fmt.Sprintf("%d of %d events failed, the first: %v", n, len(f), first)
}

// Observer sees every event that decodes, once, before it is handled: the overload
// detector. It must not block for long; it cannot fail the event.
type Observer interface {
	// Assigned starts a consumer-group generation: the partitions this replica owns now.
	Assigned(partitions []int)
	// Observe sees an event of partition p; caughtUp says p had no later record when it
	// was read.
	Observe(ctx context.Context, p int, ev event.Event, caughtUp bool)
	// Idle says partition p has nothing to read.
	Idle(ctx context.Context, p int)
}

// Permanent marks err as not worth retrying: the event goes to the dead-letter topic
// after this attempt.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func isPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// Writer writes records to a topic: a *kafka.Writer.
type Writer interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// Forwarder is the default Handler: it checks the event and forwards it, unchanged, to
// the processed topic, keyed by customer.
type Forwarder struct {
	w Writer
}

// NewForwarder returns a Forwarder writing with w (see cluster.NewWriter).
func NewForwarder(w Writer) *Forwarder { return &Forwarder{w: w} }

// Handle implements Handler: one write for the whole batch, which kafka-go sends as one
// produce request per partition.
func (f *Forwarder) Handle(ctx context.Context, items []Item) error {
	errs := make(Failures, len(items))
	failed := false
	out := make([]kafka.Message, 0, len(items))
	at := make([]int, 0, len(items)) // out[j] is items[at[j]]
	for i, it := range items {
		ev, msg := it.Event, it.Msg
		// event.Decode checked the event already; a record whose key disagrees with its
		// customer would land on another customer's partition downstream.
		if msg.Key != nil && string(msg.Key) != ev.Customer {
			errs[i], failed = Permanent(fmt.Errorf("forward event at %s/%d@%d: key %q is not customer %q",
				msg.Topic, msg.Partition, msg.Offset, msg.Key, ev.Customer)), true
			continue
		}
		out = append(out, kafka.Message{Key: []byte(ev.Customer), Value: msg.Value, Headers: msg.Headers})
		at = append(at, i)
	}
	if len(out) > 0 {
		if err := f.w.WriteMessages(ctx, out...); err != nil {
			failed = true
			var each kafka.WriteErrors
			if !errors.As(err, &each) || len(each) != len(out) {
				each = make(kafka.WriteErrors, len(out))
				for j := range each {
					each[j] = err
				}
			}
			for j, e := range each {
				if e != nil {
					m := items[at[j]].Msg
					errs[at[j]] = fmt.Errorf("forward event at %s/%d@%d: %w", m.Topic, m.Partition, m.Offset, e)
				}
			}
		}
	}
	if failed {
		return errs
	}
	return nil
}
