package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

// MaxIDBytes is the longest event id accepted.
const MaxIDBytes = 256

// apiError is an error answered to the client as {"error": ..., "field": ...}.
type apiError struct {
	Status  int    `json:"-"`
	Message string `json:"error"`
	// Field names the offending field: "customer" in a single event, "[3].customer" in
	// an array. Empty for errors of the body as a whole.
	Field string `json:"field,omitempty"`
}

func (e *apiError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

func badRequest(field, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Message: fmt.Sprintf(format, args...), Field: field}
}

// inEvent is one event as a client sends it. The ingestion time is ours to stamp, so a
// client cannot send it (unknown fields are refused).
type inEvent struct {
	ID       string          `json:"id"`
	Customer string          `json:"customer"`
	Payload  json.RawMessage `json:"payload"`
}

// parseEvents parses a request body: one event object, or an array of events of one
// customer. keyCustomer is the customer the request's API key names, "" when API keys are
// off; with a key, events may leave the customer out, and naming another one is
// forbidden (403).
//
// Errors: malformed JSON, unknown fields, an empty array, a missing or invalid customer,
// mixed customers, an invalid id → 400; another customer than the key's → 403.
func parseEvents(body []byte, keyCustomer string) ([]inEvent, *apiError) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, badRequest("", "body is empty: want an event object or an array of events")
	}
	// encoding/json turns invalid UTF-8 into U+FFFD, which would change a customer id's
	// bytes (the throttle key) behind the client's back: refuse it instead.
	if !utf8.Valid(trimmed) {
		return nil, badRequest("", "body is not valid UTF-8")
	}
	var events []inEvent
	prefix := func(int) string { return "" }
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	switch trimmed[0] {
	case '{':
		var e inEvent
		if err := dec.Decode(&e); err != nil {
			return nil, jsonError(err)
		}
		events = []inEvent{e}
	case '[':
		if err := dec.Decode(&events); err != nil {
			return nil, jsonError(err)
		}
		if len(events) == 0 {
			return nil, badRequest("", "the array of events is empty")
		}
		prefix = func(i int) string { return "[" + strconv.Itoa(i) + "]." }
	default:
		return nil, badRequest("", "body is not a JSON object or array")
	}
	if rest := bytes.TrimSpace(trimmed[dec.InputOffset():]); len(rest) > 0 {
		return nil, badRequest("", "unexpected data after the JSON value at byte %d", len(body)-len(trimmed)+int(dec.InputOffset()))
	}

	first := ""
	for i := range events {
		e := &events[i]
		if e.Customer == "" && keyCustomer != "" {
			e.Customer = keyCustomer
		}
		if e.Customer == "" {
			return nil, badRequest(prefix(i)+"customer", "customer is missing")
		}
		if err := throttle.ValidateCustomer(e.Customer); err != nil {
			return nil, badRequest(prefix(i)+"customer", "%s", strings.TrimPrefix(err.Error(), throttle.ErrInvalid.Error()+": "))
		}
		if keyCustomer != "" && e.Customer != keyCustomer {
			return nil, &apiError{Status: http.StatusForbidden, Field: prefix(i) + "customer",
				Message: "the API key does not allow events of this customer"}
		}
		if i == 0 {
			first = e.Customer
		} else if e.Customer != first {
			return nil, badRequest(prefix(i)+"customer", "all events of a request must have one customer: %q, then %q", first, e.Customer)
		}
		if msg := checkID(e.ID); msg != "" {
			return nil, badRequest(prefix(i)+"id", "%s", msg)
		}
		if string(e.Payload) == "null" {
			e.Payload = nil // the same as no payload
		}
	}
	return events, nil
}

func checkID(id string) string {
	if len(id) > MaxIDBytes {
		return fmt.Sprintf("id is %d bytes, at most %d allowed", len(id), MaxIDBytes)
	}
	if !utf8.ValidString(id) {
		return "id is not valid UTF-8"
	}
	for _, r := range id {
		if unicode.IsControl(r) {
			return fmt.Sprintf("id has control character %U", r)
		}
	}
	return ""
}

// jsonError turns a decoding error into a 400 that names the field when it can.
func jsonError(err error) *apiError {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return badRequest("", "malformed JSON at byte %d: %s", syn.Offset, syn.Error())
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return badRequest("", "want an event object or an array of event objects, not a JSON %s", typ.Value)
		}
		return badRequest(field, "%s must not be a JSON %s", field, typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name, _ := strconv.Unquote(strings.TrimPrefix(err.Error(), "json: unknown field "))
		return badRequest(name, "unknown field %q (events have id, customer and payload)", name)
	}
	return badRequest("", "malformed JSON: %s", err.Error())
}
