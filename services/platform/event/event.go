// Package event is the format of the events topic, which ingestion writes and processing
// reads: one JSON object per record, keyed by customer.
package event

import (
	"bytes"
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
// are created (cluster.CreateTopics): deleted by age, never compacted, since events are
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
	e, ok := decodeAppended(b)
	if !ok {
		e = Event{}
		if err := json.Unmarshal(b, &e); err != nil {
			return e, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		// encoding/json keeps a payload's invalid UTF-8 as it is; Encode would refuse it.
		if len(e.Payload) > 0 && !jsontext.Value(e.Payload).IsValid() {
			return e, fmt.Errorf("%w: payload is not valid JSON", ErrMalformed)
		}
	}
	if err := throttle.ValidateCustomer(e.Customer); err != nil {
		return e, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if e.IngestedAt.IsZero() {
		return e, fmt.Errorf("%w: ingested_at missing", ErrMalformed)
	}
	return e, nil
}

// decodeAppended reads the exact layout Append writes, without reflection: processing
// decodes every event. Anything else (escapes, non-ASCII text, other field orders or
// names) is left to encoding/json, and so is a payload that is not one JSON value.
func decodeAppended(b []byte) (Event, bool) {
	const atKey = `,"ingested_at":"`
	var e Event
	if len(b) < 2 || b[0] != '{' || b[len(b)-2] != '"' || b[len(b)-1] != '}' {
		return e, false
	}
	i := bytes.LastIndex(b, []byte(atKey))
	if i < 0 {
		return e, false
	}
	ts, ok := plain(b[i+len(atKey) : len(b)-1])
	if !ok || len(ts) != len(b)-1-(i+len(atKey))-1 {
		return e, false
	}
	at, err := time.Parse(time.RFC3339, string(ts))
	if err != nil {
		return e, false
	}
	rest := b[1:i]
	if r, ok := bytes.CutPrefix(rest, []byte(`"id":"`)); ok {
		id, ok := plain(r)
		if !ok || len(r) == len(id)+1 || r[len(id)+1] != ',' {
			return e, false
		}
		e.ID, rest = string(id), r[len(id)+2:]
	}
	r, ok := bytes.CutPrefix(rest, []byte(`"customer":"`))
	if !ok {
		return e, false
	}
	customer, ok := plain(r)
	if !ok {
		return e, false
	}
	e.Customer, rest = string(customer), r[len(customer)+1:]
	if len(rest) > 0 {
		payload, ok := bytes.CutPrefix(rest, []byte(`,"payload":`))
		// One JSON value as Append writes it, without the white space around it that
		// IsValid allows and encoding/json leaves out of a RawMessage.
		if !ok || !jsontext.Value(payload).IsValid() || len(payload) == 0 ||
			isSpace(payload[0]) || isSpace(payload[len(payload)-1]) {
			return Event{}, false
		}
		e.Payload = bytes.Clone(payload)
	}
	e.IngestedAt = at
	return e, true
}

// isSpace reports whether c is JSON white space.
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// plain returns the text of b up to the first quote, if that text needs no unescaping:
// printable ASCII without a backslash.
func plain(b []byte) ([]byte, bool) {
	for i, c := range b {
		switch {
		case c == '"':
			return b[:i], true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return nil, false
		}
	}
	return nil, false
}
