// Package event is the format of the events topic, which ingestion writes and processing
// reads: one JSON object per record, keyed by customer.
package event

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

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

// Encode returns the JSON value of e.
func Encode(e *Event) ([]byte, error) { return json.Marshal(e) }

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
