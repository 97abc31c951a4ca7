// Package event is the format of the events topic, which ingestion writes and processing
// reads: one JSON object per record, keyed by customer.
package event

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

// DefaultTopic is the events topic's default name.
const DefaultTopic = "events"

// Event is one customer event as it travels the pipeline.
type Event struct {
	ID       string          `json:"id,omitempty"`
	Customer string          `json:"customer"`
	Payload  json.RawMessage `json:"payload,omitempty"`
	// IngestedAt is stamped by the ingestion replica that accepted the event. Processing
	// measures an event's age from it, which is how an overloaded customer is noticed.
	IngestedAt time.Time `json:"ingested_at"`
}

// ErrMalformed wraps every decode failure.
var ErrMalformed = errors.New("event: malformed")

// Encode returns the JSON value of e. It checks that the payload is JSON.
func Encode(e *Event) ([]byte, error) {
	if len(e.Payload) > 0 && !jsontext.Value(e.Payload).IsValid() {
		return nil, fmt.Errorf("%w: payload is not valid JSON", ErrMalformed)
	}
	return Append(nil, e)
}

// Append appends the JSON value of e to dst: the same object as encoding/json would
// write, built without reflection, since ingestion writes one per accepted event. The
// payload is copied as it is, so the caller must know it is JSON (ingestion's parser
// has just read it); Encode checks it first. It fails only on text that is not UTF-8.
func Append(dst []byte, e *Event) ([]byte, error) {
	var err error
	dst = append(dst, '{')
	if e.ID != "" {
		dst = append(dst, `"id":`...)
		if dst, err = jsontext.AppendQuote(dst, e.ID); err != nil {
			return nil, fmt.Errorf("%w: id: %w", ErrMalformed, err)
		}
		dst = append(dst, ',')
	}
	dst = append(dst, `"customer":`...)
	if dst, err = jsontext.AppendQuote(dst, e.Customer); err != nil {
		return nil, fmt.Errorf("%w: customer: %w", ErrMalformed, err)
	}
	if len(e.Payload) > 0 {
		dst = append(dst, `,"payload":`...)
		dst = append(dst, e.Payload...)
	}
	dst = append(dst, `,"ingested_at":"`...)
	dst = e.IngestedAt.AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"', '}'), nil
}

// Decode parses and checks one value of the events topic.
func Decode(b []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(b, &e); err != nil {
		return e, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := throttle.ValidateCustomer(e.Customer); err != nil {
		return e, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if e.IngestedAt.IsZero() {
		return e, fmt.Errorf("%w: ingested_at missing", ErrMalformed)
	}
	return e, nil
}
