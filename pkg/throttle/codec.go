package throttle

import (
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linkedin/goavro/v2"
	"github.com/riferrei/srclient"

	"github.com/sluice-dev/sluice/pkg/throttle/internal/fastavro"
)

// schemaV1 is schemas/throttle.avsc, copied here by go generate because a module cannot
// embed files outside itself. TestEmbeddedSchemaIsSource keeps the copy honest.
//
//go:embed throttle.avsc
var schemaV1 string

// readSchema is a writer schema seen in records: its goavro codec, and whether it is this
// build's own schema, which decodeV1 reads without goavro.
type readSchema struct {
	codec *goavro.Codec
	isV1  bool
}

// Schema is the Avro schema the codec writes (schemas/throttle.avsc).
func (c *Codec) Schema() string { return schemaV1 }

// subject is the registry subject of the topic's values (TopicNameStrategy).
func subject(topic string) string { return topic + "-value" }

const headerLen = 5 // magic byte 0 + 4-byte big-endian schema id

// Subject is the registry subject the codec registers its schema under: the topic's
// name and "-value" (TopicNameStrategy).
func (c *Codec) Subject() string { return c.subject }

// Codec turns Records into Confluent-framed Avro and back.
//
// Encoding uses the schema of this build, registered under <topic>-value on first use.
// Decoding uses the schema the record was written with, looked up by its id and cached for
// the life of the Codec, so ids already seen keep decoding while the registry is down.
// A Codec is safe for concurrent use.
type Codec struct {
	reg     *srclient.SchemaRegistryClient
	subject string

	mu      sync.Mutex // serialises registry calls and writes to byID
	byID    atomic.Pointer[map[int]readSchema]
	writeID atomic.Int64 // 0 until registered
	writer  *goavro.Codec
}

// RegistryConfig says how to reach the Schema Registry.
type RegistryConfig struct {
	URL      string
	Username string        // basic auth, optional
	Password string        // basic auth, optional
	Timeout  time.Duration // per request; 0 means 5s
}

// NewCodec returns a codec for the values of topic, talking to the registry at cfg.URL.
// It does not contact the registry until the first Encode or Register, or the first
// Decode of a schema id it has not seen.
func NewCodec(cfg RegistryConfig, topic string) (*Codec, error) {
	if cfg.URL == "" {
		return nil, errors.New("new codec: registry URL is empty")
	}
	if topic == "" {
		return nil, errors.New("new codec: topic is empty")
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	reg := srclient.NewSchemaRegistryClient(cfg.URL, srclient.WithClient(&http.Client{Timeout: timeout}))
	if cfg.Username != "" {
		reg.SetCredentials(cfg.Username, cfg.Password)
	}
	writer, err := goavro.NewCodec(schemaV1)
	if err != nil {
		return nil, fmt.Errorf("new codec: parse embedded schema: %w", err)
	}
	c := &Codec{reg: reg, subject: subject(topic), writer: writer}
	empty := map[int]readSchema{}
	c.byID.Store(&empty)
	return c, nil
}

// Register registers this build's schema under the topic's subject (a no-op when it is
// already registered there), sets the subject's compatibility to BACKWARD, and returns the
// schema id. Encode calls it on first use.
func (c *Codec) Register() (int, error) {
	if id := c.writeID.Load(); id != 0 {
		return int(id), nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if id := c.writeID.Load(); id != 0 {
		return int(id), nil
	}
	s, err := c.reg.CreateSchema(c.subject, schemaV1, srclient.Avro)
	if err != nil {
		return 0, fmt.Errorf("register schema under %s: %w", c.subject, registryErr(err))
	}
	if _, err := c.reg.ChangeSubjectCompatibilityLevel(c.subject, srclient.Backward); err != nil {
		return 0, fmt.Errorf("set compatibility of %s to BACKWARD: %w", c.subject, registryErr(err))
	}
	c.storeLocked(s.ID(), c.writer)
	c.writeID.Store(int64(s.ID()))
	return s.ID(), nil
}

// Encode returns the Confluent-framed Avro value of r. Times are stored with millisecond
// precision. r must be valid.
func (c *Codec) Encode(r *Record) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("encode throttle: %w", err)
	}
	id, err := c.Register()
	if err != nil {
		return nil, fmt.Errorf("encode throttle for %q: %w", r.Customer, err)
	}
	buf := make([]byte, headerLen, 128+len(r.ID)+2*len(r.Customer)+len(r.Reason.Note)+len(r.Reason.Metric)+len(r.SetBy))
	binary.BigEndian.PutUint32(buf[1:], uint32(id))
	buf, err = c.writer.BinaryFromNative(buf, toNative(r))
	if err != nil {
		return nil, fmt.Errorf("encode throttle for %q: %w", r.Customer, err)
	}
	return buf, nil
}

// Decode parses a Confluent-framed Avro value. Errors wrap errBadMagic, errTruncated,
// errUnknownSchema, errBadBody or ErrInvalid for a poison record (see isPoison), and
// ErrRegistryUnavailable when the schema id is new and the registry cannot be reached,
// or errSchemaNotFound when it does not know the id: both retryable (follow.ErrRetry).
// A tombstone (nil value) has nothing to decode: errTombstone.
func (c *Codec) Decode(value []byte) (Record, error) {
	if value == nil {
		return Record{}, errTombstone
	}
	if len(value) < headerLen {
		return Record{}, fmt.Errorf("%w: %d bytes", errTruncated, len(value))
	}
	if value[0] != 0 {
		return Record{}, fmt.Errorf("%w: 0x%02x", errBadMagic, value[0])
	}
	id := int(binary.BigEndian.Uint32(value[1:headerLen]))
	rs, err := c.codecFor(id)
	if err != nil {
		return Record{}, err
	}
	if rs.isV1 {
		r, err := decodeV1(value[headerLen:])
		if errors.Is(err, ErrInvalid) { // well-formed, but not a throttle Sluice can hold
			return Record{}, fmt.Errorf("schema id %d: %w", id, err)
		}
		if err != nil {
			return Record{}, fmt.Errorf("%w: schema id %d: %w", errBadBody, id, err)
		}
		if err := r.Validate(); err != nil {
			return Record{}, err
		}
		return r, nil
	}
	return decodeGeneric(rs.codec, id, value[headerLen:])
}

// decodeGeneric decodes with goavro, for any writer schema, mapping fields by name.
func decodeGeneric(codec *goavro.Codec, id int, body []byte) (Record, error) {
	native, rest, err := codec.NativeFromBinary(body)
	if err != nil {
		return Record{}, fmt.Errorf("%w: schema id %d: %w", errBadBody, id, err)
	}
	if len(rest) != 0 {
		return Record{}, fmt.Errorf("%w: schema id %d: %d trailing bytes", errBadBody, id, len(rest))
	}
	fields, ok := native.(map[string]any)
	if !ok {
		return Record{}, fmt.Errorf("%w: schema id %d is not a record schema", errUnknownSchema, id)
	}
	r, err := fromNative(fields)
	if err != nil {
		return Record{}, fmt.Errorf("schema id %d: %w", id, err)
	}
	if err := r.Validate(); err != nil {
		return Record{}, err
	}
	return r, nil
}

// codecFor returns the codec of a writer schema id, from the cache when it can.
func (c *Codec) codecFor(id int) (readSchema, error) {
	if rs, ok := (*c.byID.Load())[id]; ok {
		return rs, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if rs, ok := (*c.byID.Load())[id]; ok {
		return rs, nil
	}
	s, err := c.reg.GetSchema(id)
	if err != nil {
		if isNotFound(err) {
			return readSchema{}, fmt.Errorf("%w: %d", errSchemaNotFound, id)
		}
		return readSchema{}, fmt.Errorf("fetch schema id %d: %w", id, registryErr(err))
	}
	if t := s.SchemaType(); t != nil && *t != srclient.Avro {
		return readSchema{}, fmt.Errorf("%w: %d is a %s schema, not Avro", errUnknownSchema, id, *t)
	}
	codec, err := goavro.NewCodec(s.Schema())
	if err != nil {
		return readSchema{}, fmt.Errorf("%w: %d does not parse: %w", errUnknownSchema, id, err)
	}
	c.storeLocked(id, codec)
	return (*c.byID.Load())[id], nil
}

// storeLocked publishes a new id→codec map; readers never take the lock. Copying is
// fine: a topic sees a handful of schema versions in its life.
func (c *Codec) storeLocked(id int, codec *goavro.Codec) {
	old := *c.byID.Load()
	next := make(map[int]readSchema, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[id] = readSchema{codec: codec, isV1: codec.CanonicalSchema() == c.writer.CanonicalSchema()}
	c.byID.Store(&next)
}

// isNotFound reports whether the registry said the schema does not exist (HTTP 404,
// error code 40403), as opposed to not answering.
func isNotFound(err error) bool {
	var se srclient.Error
	if errors.As(err, &se) {
		return se.Code == 40403 || se.Code/100 == 404
	}
	return false
}

// registryErr marks a failure to talk to the registry as retryable.
func registryErr(err error) error {
	var se srclient.Error
	if errors.As(err, &se) && se.Code/100 != 500 && se.Code/1000 != 50 {
		return fmt.Errorf("registry refused (code %d): %s", se.Code, se.Message)
	}
	return fmt.Errorf("%w: %w", ErrRegistryUnavailable, err)
}

func toNative(r *Record) map[string]any {
	m := map[string]any{
		"id":          r.ID,
		"customer":    r.Customer,
		"limit":       r.Limit,
		"window_ms":   r.Window.Milliseconds(),
		"created_at":  r.CreatedAt.UTC(),
		"expires_at":  r.ExpiresAt.UTC(),
		"reason_kind": reasonSymbols[r.Reason.Kind],
		"reason_note": r.Reason.Note,
		"set_by":      r.SetBy,
		"mode":        modeSymbols[r.Mode],
	}
	if r.Reason.Metric != "" {
		m["reason_metric"] = goavro.Union("string", r.Reason.Metric)
		m["reason_value"] = goavro.Union("double", r.Reason.Value)
	} else {
		m["reason_metric"] = nil
		m["reason_value"] = nil
	}
	return m
}

var (
	reasonSymbols = [...]string{ReasonManual: "MANUAL", ReasonAutomatic: "AUTOMATIC"}
	modeSymbols   = [...]string{ModeEnforce: "ENFORCE", ModeShadow: "SHADOW"}
)

// fromNative maps decoded fields by name: fields this build does not know are ignored,
// optional fields a writer left out take their defaults, and a missing required field
// makes the record invalid.
func fromNative(f map[string]any) (Record, error) {
	var r Record
	var err error
	str := func(name string, required bool) string {
		v, ok := f[name].(string)
		if !ok && required && err == nil {
			err = fmt.Errorf("%w: field %s missing or not a string", ErrInvalid, name)
		}
		return v
	}
	long := func(name string) int64 {
		v, ok := f[name].(int64)
		if !ok && err == nil {
			err = fmt.Errorf("%w: field %s missing or not a long", ErrInvalid, name)
		}
		return v
	}
	ts := func(name string) time.Time {
		switch v := f[name].(type) {
		case time.Time:
			return v.UTC()
		case int64: // a writer schema without the logical type
			return time.UnixMilli(v).UTC()
		}
		if err == nil {
			err = fmt.Errorf("%w: field %s missing or not a timestamp", ErrInvalid, name)
		}
		return time.Time{}
	}
	r.ID = str("id", true)
	r.Customer = str("customer", true)
	r.Limit = long("limit")
	if w, werr := windowOf(long("window_ms")); werr != nil && err == nil {
		err = werr
	} else {
		r.Window = w
	}
	r.CreatedAt = ts("created_at")
	r.ExpiresAt = ts("expires_at")
	r.SetBy = str("set_by", false)
	r.Reason.Note = str("reason_note", false)
	switch f["reason_kind"] {
	case "AUTOMATIC":
		r.Reason.Kind = ReasonAutomatic
	default:
		// MANUAL, or a symbol a newer writer added: Avro reads a symbol the reader does
		// not know as the enum's default, MANUAL (schemas/README.md, rule 2).
		r.Reason.Kind = ReasonManual
	}
	switch f["mode"] {
	case "ENFORCE", nil:
		r.Mode = ModeEnforce
	case "SHADOW":
		r.Mode = ModeShadow
	default:
		// An unknown mode from a newer writer: enforcing is the safe reading.
		r.Mode = ModeEnforce
	}
	if u, ok := f["reason_metric"].(map[string]any); ok {
		r.Reason.Metric, _ = u["string"].(string)
	}
	if u, ok := f["reason_value"].(map[string]any); ok {
		r.Reason.Value, _ = u["double"].(float64)
	}
	return r, err
}

// decodeV1 decodes a body written with exactly this build's schema (v1) without goavro
// (internal/fastavro: the rebuild's hot path).
func decodeV1(b []byte) (Record, error) {
	v, err := fastavro.DecodeV1(b, func(ms int64) error { _, err := windowOf(ms); return err })
	if err != nil {
		return Record{}, err
	}
	r := Record{
		ID: v.ID, Customer: v.Customer, Limit: v.Limit, Window: time.Duration(v.WindowMillis) * time.Millisecond,
		CreatedAt: millis(v.CreatedMillis), ExpiresAt: millis(v.ExpiresMillis),
		Reason: Reason{Kind: ReasonManual, Note: v.Note, Metric: v.Metric, Value: v.Value}, SetBy: v.SetBy,
	}
	if v.Automatic {
		r.Reason.Kind = ReasonAutomatic
	}
	if v.Shadow {
		r.Mode = ModeShadow
	}
	return r, nil
}

// millis converts as goavro's timestamp-millis does.
func millis(ms int64) time.Time {
	s := ms / 1e3
	return time.Unix(s, (ms-s*1e3)*1e6).UTC()
}
