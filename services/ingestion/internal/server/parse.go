package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

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
	// ID and Payload point into the request body (an escaped id into a copy), so they
	// are valid only while the body is: no allocation per event.
	ID       []byte
	Customer string
	// Payload is the event's JSON value exactly as sent (nil when absent or null).
	Payload []byte
}

// decoders reuse jsontext decoders (and their state) between requests: parsing is the
// largest cost of a request after the network.
var decoders = sync.Pool{New: func() any { return new(decoder) }}

// decoder is a pooled jsontext decoder and the buffer through which it reads a body in
// place.
type decoder struct {
	dec jsontext.Decoder
	src bytes.Buffer
}

// noBody is what a pooled decoder reads between requests, so that the pool does not
// keep the last body alive.
type noBody struct{}

func (noBody) Read([]byte) (int, error) { return 0, io.EOF }

// appendEvents parses a request body, appending its events to dst (a request reuses the
// room of an earlier one's): one event object, or an array of events of one customer. keyCustomer is the customer the request's API key names, "" when API keys are
// off; with a key, events may leave the customer out, and naming another one is
// forbidden (403). The events' payloads point into body.
//
// The parser reads tokens with jsontext (the JSON v2 tokenizer) instead of reflecting
// into a struct: it is several times faster, checks every payload without copying it,
// and is strict where strictness protects the throttle key: field names match exactly
// (no case folding), an event field named twice is refused (which customer would count?;
// inside payloads repeated names stay allowed, as they always were), and
// text must be valid UTF-8.
//
// Errors: malformed JSON, unknown or repeated fields, an empty array, a missing or
// invalid customer, mixed customers, an invalid id → 400; another customer than the
// key's → 403.
func appendEvents(dst []inEvent, body []byte, keyCustomer string) ([]inEvent, *apiError) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, badRequest("", "body is empty: want an event object or an array of events")
	}
	// Checked here for a clear message; the tokenizer refuses invalid UTF-8 too, so a
	// customer id's bytes (the throttle key) are never changed behind the client's back.
	if !utf8.Valid(trimmed) {
		return nil, badRequest("", "body is not valid UTF-8")
	}
	d := decoders.Get().(*decoder)
	// A bytes.Buffer is parsed in place, not copied. Duplicate names are this parser's
	// to refuse in an event; inside a payload they are the client's business, as they
	// always were.
	d.src = *bytes.NewBuffer(trimmed)
	d.dec.Reset(&d.src, jsontext.AllowDuplicateNames(true))
	p := eventParser{dec: &d.dec, body: trimmed, lead: len(body) - len(trimmed), key: keyCustomer, events: dst[:0]}
	events, aerr := p.parse()
	d.dec.Reset(noBody{})
	d.src = bytes.Buffer{}
	decoders.Put(d)
	if aerr != nil {
		return nil, aerr
	}
	return events, nil
}

// eventParser reads one request body's events from dec, which reads body.
type eventParser struct {
	dec    *jsontext.Decoder
	body   []byte // the request body from its first non-space byte
	lead   int    // the spaces before it, for byte offsets in errors
	key    string
	array  bool      // the body is an array: errors name fields "[i].field"
	first  string    // the first event's customer, shared by the ones that repeat it
	events []inEvent // where parse appends
}

func (p *eventParser) parse() ([]inEvent, *apiError) {
	events := p.events
	switch k := p.dec.PeekKind(); k {
	case '{':
		e, aerr := p.event(-1)
		if aerr != nil {
			return nil, aerr
		}
		events = append(events, e)
	case '[':
		if _, err := p.dec.ReadToken(); err != nil {
			return nil, p.syntaxError(err)
		}
		p.array = true
		for i := 0; ; i++ {
			k := p.dec.PeekKind()
			if k == ']' {
				break
			}
			if k != '{' {
				if k == 0 {
					_, err := p.dec.ReadToken()
					return nil, p.syntaxError(err)
				}
				return nil, badRequest("", "want an event object or an array of event objects, not a JSON %s", kindName(k))
			}
			e, aerr := p.event(i)
			if aerr != nil {
				return nil, aerr
			}
			if i == 0 {
				p.first = e.Customer
			}
			events = append(events, e)
		}
		if _, err := p.dec.ReadToken(); err != nil {
			return nil, p.syntaxError(err)
		}
		if len(events) == 0 {
			return nil, badRequest("", "the array of events is empty")
		}
	case 0:
		_, err := p.dec.ReadToken()
		return nil, p.syntaxError(err)
	default:
		return nil, badRequest("", "body is not a JSON object or array")
	}
	end := int64(p.lead) + p.dec.InputOffset()
	if p.dec.PeekKind() != 0 {
		return nil, badRequest("", "unexpected data after the JSON value at byte %d", end)
	}
	if _, err := p.dec.ReadToken(); err != io.EOF {
		return nil, badRequest("", "unexpected data after the JSON value at byte %d", end)
	}
	if aerr := p.check(events); aerr != nil {
		return nil, aerr
	}
	return events, nil
}

// event reads one event object: the i-th of an array, or the body itself (i < 0).
func (p *eventParser) event(i int) (inEvent, *apiError) {
	var e inEvent
	var seen [3]bool // by fieldIndex

	if _, err := p.dec.ReadToken(); err != nil { // '{', as peeked
		return e, p.syntaxError(err)
	}
	for p.dec.PeekKind() != '}' {
		name, err := p.dec.ReadValue()
		if err != nil {
			return e, p.syntaxError(err)
		}
		n, field, aerr := fieldOf(name)
		if aerr != nil {
			return e, aerr
		}
		if n < 0 {
			return e, badRequest(fieldName(i, string(field)), "unknown field %q (events have id, customer and payload)", field)
		}
		if seen[n] {
			return e, badRequest(fieldName(i, fields[n]), "field %q appears more than once", fields[n])
		}
		seen[n] = true
		switch n {
		case fieldCustomer:
			c, aerr := p.text(i, "customer")
			if aerr != nil {
				return e, aerr
			}
			if string(c) == p.first { // the events of a request repeat one customer
				e.Customer = p.first
			} else {
				e.Customer = string(c)
			}
		case fieldID:
			id, aerr := p.text(i, "id")
			if aerr != nil {
				return e, aerr
			}
			e.ID = id
		case fieldPayload:
			v, err := p.dec.ReadValue()
			if err != nil {
				return e, p.syntaxError(err)
			}
			if v.Kind() != 'n' {
				end := int(p.dec.InputOffset())
				e.Payload = p.body[end-len(v) : end : end] // the bytes as sent, not a copy
			}
		}
	}
	if _, err := p.dec.ReadToken(); err != nil { // '}'
		return e, p.syntaxError(err)
	}
	return e, nil
}

// An event's fields, by number.
const (
	fieldCustomer = iota
	fieldID
	fieldPayload
)

var fields = [...]string{fieldCustomer: "customer", fieldID: "id", fieldPayload: "payload"}

// fieldOf numbers the event field a JSON name (quotes included) names, -1 for an unknown
// one, and returns the name unquoted. The names as clients write them are matched as
// they are; only a name with escapes is unquoted first.
func fieldOf(name jsontext.Value) (int, []byte, *apiError) {
	switch string(name) {
	case `"customer"`:
		return fieldCustomer, name[1 : len(name)-1], nil
	case `"id"`:
		return fieldID, name[1 : len(name)-1], nil
	case `"payload"`:
		return fieldPayload, name[1 : len(name)-1], nil
	}
	field, aerr := unquote(name)
	if aerr != nil {
		return -1, nil, aerr
	}
	for n, f := range fields {
		if string(field) == f {
			return n, field, nil
		}
	}
	return -1, field, nil
}

// text reads the string field of the i-th event: its unescaped bytes; null reads as
// absent, as it always has.
func (p *eventParser) text(i int, field string) ([]byte, *apiError) {
	v, err := p.dec.ReadValue() // not peeked first: one step less per field
	if err != nil {
		return nil, p.syntaxError(err)
	}
	switch k := v.Kind(); k {
	case '"':
		return unquote(v)
	case 'n':
		return nil, nil
	default:
		return nil, badRequest(fieldName(i, field), "%s must not be a JSON %s", fieldName(i, field), kindName(k))
	}
}

// unquote returns a JSON string's contents, unescaped (a copy only if it has escapes).
func unquote(v jsontext.Value) ([]byte, *apiError) {
	raw := v[1 : len(v)-1]
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw, nil
	}
	u, err := jsontext.AppendUnquote(nil, v)
	if err != nil {
		return nil, syntaxError(err)
	}
	return u, nil
}

// check applies the rules of a request's events that are not JSON syntax.
func (p *eventParser) check(events []inEvent) *apiError {
	field := func(i int, name string) string {
		if !p.array {
			i = -1
		}
		return fieldName(i, name)
	}
	first := ""
	for i := range events {
		e := &events[i]
		if e.Customer == "" && p.key != "" {
			e.Customer = p.key
		}
		switch {
		case e.Customer == "":
			return badRequest(field(i, "customer"), "customer is missing")
		case p.key != "" && e.Customer != p.key:
			return &apiError{Status: http.StatusForbidden, Field: field(i, "customer"),
				Message: "the API key does not allow events of this customer"}
		case i > 0 && e.Customer != first:
			return badRequest(field(i, "customer"), "all events of a request must have one customer: %q, then %q", first, e.Customer)
		case i == 0:
			if err := throttle.ValidateCustomer(e.Customer); err != nil {
				return badRequest(field(i, "customer"), "%s", strings.TrimPrefix(err.Error(), throttle.ErrInvalid.Error()+": "))
			}
			first = e.Customer // the others equal it, so they are valid too
		}
		if msg := checkID(e.ID); msg != "" {
			return badRequest(field(i, "id"), "%s", msg)
		}
	}
	return nil
}

// fieldName names a field of the i-th event of an array ("[3].customer"), or of the
// body's one event (i < 0). Built only for errors: the hot path keeps indexes.
func fieldName(i int, field string) string {
	if i < 0 {
		return field
	}
	return "[" + strconv.Itoa(i) + "]." + field
}

// syntaxError is the package's syntaxError with byte offsets counted from the start of
// the body, not from its first non-space byte.
func (p *eventParser) syntaxError(err error) *apiError {
	var syn *jsontext.SyntacticError
	if errors.As(err, &syn) {
		shifted := *syn
		shifted.ByteOffset += int64(p.lead)
		err = &shifted
	}
	return syntaxError(err)
}

// syntaxError turns a tokenizer error into a 400 (nil for nil).
func syntaxError(err error) *apiError {
	if err == nil {
		return nil
	}
	var syn *jsontext.SyntacticError
	if errors.As(err, &syn) {
		return badRequest("", "malformed JSON at byte %d: %v", syn.ByteOffset, syn.Err)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return badRequest("", "malformed JSON: the body ends inside a value")
	}
	return badRequest("", "malformed JSON: %v", err)
}

func kindName(k jsontext.Kind) string {
	switch k {
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	}
	return k.String() // null, string, number
}

func checkID(id []byte) string {
	if len(id) > MaxIDBytes {
		return fmt.Sprintf("id is %d bytes, at most %d allowed", len(id), MaxIDBytes)
	}
	for _, c := range id {
		if c < 0x20 || c >= 0x7f { // not printable ASCII: the few ids that need a closer look
			return checkIDRunes(id)
		}
	}
	return ""
}

func checkIDRunes(id []byte) string {
	if !utf8.Valid(id) {
		return "id is not valid UTF-8"
	}
	for _, r := range string(id) {
		if unicode.IsControl(r) {
			return fmt.Sprintf("id has control character %U", r)
		}
	}
	return ""
}
