package consume

import (
	"context"
	"errors"
	"fmt"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/event"
)

// Handler does the work for one decoded event. msg is the record it came in, for its
// key, headers and value. A returned error is retried with backoff, up to the consumer's
// retry limit, unless it is Permanent; then the event goes to the dead-letter topic.
// Handle may be called again for the same event (after a retry, or after a restart
// before the offset was committed): it must be safe to repeat.
type Handler interface {
	Handle(ctx context.Context, ev event.Event, msg kafka.Message) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, ev event.Event, msg kafka.Message) error

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, ev event.Event, msg kafka.Message) error {
	return f(ctx, ev, msg)
}

// Observer sees every event that decodes, once, before it is handled: the overload
// detector. It must not block for long; it cannot fail the event.
type Observer interface {
	Observe(ctx context.Context, ev event.Event)
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

// NewForwarder returns a Forwarder writing with w (see NewWriter).
func NewForwarder(w Writer) *Forwarder { return &Forwarder{w: w} }

// Handle implements Handler.
func (f *Forwarder) Handle(ctx context.Context, ev event.Event, msg kafka.Message) error {
	// event.Decode checked the event already; a record whose key disagrees with its
	// customer would land on another customer's partition downstream.
	if msg.Key != nil && string(msg.Key) != ev.Customer {
		return Permanent(fmt.Errorf("forward event at %s/%d@%d: key %q is not customer %q",
			msg.Topic, msg.Partition, msg.Offset, msg.Key, ev.Customer))
	}
	out := kafka.Message{Key: throttle.Key(ev.Customer), Value: msg.Value, Headers: msg.Headers}
	if err := f.w.WriteMessages(ctx, out); err != nil {
		return fmt.Errorf("forward event at %s/%d@%d: %w", msg.Topic, msg.Partition, msg.Offset, err)
	}
	return nil
}
