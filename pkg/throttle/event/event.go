// Package event is the format of the events topic, which ingestion writes and processing
// reads: one JSON object per record, keyed by customer.
package event

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

// DefaultTopic is the events topic's default name.
const DefaultTopic = "events"

// TopicConfig is how the events topic, and the processed and dead-letter topics after it,
// are created (throttle.CreateTopics): deleted by age, never compacted, since events are
// not a table; and min.insync.replicas, so an acknowledged event survives a broker.
func TopicConfig(name string, partitions, replication, minInsync int) kafka.TopicConfig {
	return kafka.TopicConfig{Topic: name, NumPartitions: partitions, ReplicationFactor: replication, ConfigEntries: []kafka.ConfigEntry{
		{ConfigName: "cleanup.policy", ConfigValue: "delete"},
		{ConfigName: "min.insync.replicas", ConfigValue: strconv.Itoa(minInsync)},
	}}
}

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
	s, err := NewStamp(e.Customer, e.IngestedAt)
	if err != nil {
		return nil, err
	}
	return appendEvent(dst, &s, e.ID, e.Payload)
}

// Stamp is what the events of one ingestion request share, encoded once for all of
// them: the customer, quoted, and the ingestion time, formatted. Appending each event
// is then mostly copying, where Append would quote and format again for every event.
type Stamp struct {
	customer []byte // "customer":"<customer>"
	at       []byte // ,"ingested_at":"<time>"}
}

// NewStamp encodes customer and at for the events that share them. It fails only on a
// customer that is not UTF-8.
func NewStamp(customer string, at time.Time) (Stamp, error) {
	b := make([]byte, 0, len(customer)+64)
	b = append(b, `"customer":`...)
	b, err := jsontext.AppendQuote(b, customer)
	if err != nil {
		return Stamp{}, fmt.Errorf("%w: customer: %w", ErrMalformed, err)
	}
	split := len(b)
	b = append(b, `,"ingested_at":"`...)
	b = at.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"', '}')
	return Stamp{customer: b[:split:split], at: b[split:]}, nil
}

// Append appends the JSON value of the event with s's customer and time, and id and
// payload (each left out when empty), as Append would for the same Event. The payload
// must be JSON. It fails only on an id that is not UTF-8.
func (s *Stamp) Append(dst, id, payload []byte) ([]byte, error) {
	return appendEvent(dst, s, id, payload)
}

func appendEvent[ID ~string | ~[]byte](dst []byte, s *Stamp, id ID, payload []byte) ([]byte, error) {
	dst = append(dst, '{')
	if len(id) > 0 {
		dst = append(dst, `"id":`...)
		var err error
		if dst, err = jsontext.AppendQuote(dst, id); err != nil {
			return nil, fmt.Errorf("%w: id: %w", ErrMalformed, err)
		}
		dst = append(dst, ',')
	}
	dst = append(dst, s.customer...)
	if len(payload) > 0 {
		dst = append(dst, `,"payload":`...)
		dst = append(dst, payload...)
	}
	return append(dst, s.at...), nil
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
