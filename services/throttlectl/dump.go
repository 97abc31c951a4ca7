package main

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/pkg/throttle/follow"
	"github.com/sluice-dev/sluice/pkg/throttle/throttlejson"
	"github.com/sluice-dev/sluice/services/platform/wait"
)

func dumpCommand() *command {
	return &command{
		name: "dump", summary: "print every record of the topic as JSON lines",
		help: `
Reads every partition of the topic from its first offset up to the end offset it had when
the dump started, and prints one JSON object per record, partition by partition, in
offset order: partition, offset, timestamp, key, headers, and either the decoded throttle
("value"), "tombstone": true, or "poison" (bad_magic, truncated, unknown_schema, bad_body,
invalid, key_mismatch, no_key) with the raw value in base64. A summary goes to stderr.

The output is the input of restore; see README.md for the format. A topic that is not
compacted is dumped anyway (with a warning): salvaging it is the point.`,
		define: func(*flag.FlagSet) action {
			return func(ctx context.Context, s *session, _ []string) error { return s.dump(ctx) }
		},
	}
}

// dumpLine is one line of a dump: one record of the topic.
type dumpLine struct {
	Partition int       `json:"partition"`
	Offset    int64     `json:"offset"`
	Timestamp time.Time `json:"timestamp"`
	// Key is the customer id; null for a record without a key. A key that is not valid
	// UTF-8 (never a customer id) is in KeyBase64 instead, so no byte is lost.
	Key       *string      `json:"key"`
	KeyBase64 string       `json:"key_base64,omitempty"`
	Headers   []dumpHeader `json:"headers"`
	// Exactly one of Value, Tombstone and Poison is set.
	Value     *throttlejson.Record `json:"value,omitempty"`
	SchemaID  int                  `json:"schema_id,omitempty"` // the source registry's id of Value's schema
	Tombstone bool                 `json:"tombstone,omitempty"`
	Poison    string               `json:"poison,omitempty"`
	Error     string               `json:"error,omitempty"` // why the record is poison
	Raw       *string              `json:"raw,omitempty"`   // base64 of a poison record's value
}

type dumpHeader struct {
	Key         string `json:"key"`
	Value       string `json:"value"`
	ValueBase64 string `json:"value_base64,omitempty"` // instead of value, when not UTF-8
}

// entry is one record of a topic with its value read: from the topic itself, or from a
// line of a dump.
type entry struct {
	Partition int
	Offset    int64
	Time      time.Time
	Key       []byte // nil: no key
	Headers   []kafka.Header
	Tombstone bool
	Record    *throttle.Record // nil for tombstones and poison
	Poison    string           // a throttle.PoisonReason, or key_mismatch
	Err       error            // why it is poison
	Value     []byte           // as on the topic (empty when read from a dump)
	SchemaID  int
}

func (e entry) line() dumpLine {
	l := dumpLine{Partition: e.Partition, Offset: e.Offset, Timestamp: e.Time.UTC(), Headers: []dumpHeader{}}
	switch {
	case e.Key == nil:
	case utf8.Valid(e.Key):
		k := string(e.Key)
		l.Key = &k
	default:
		l.KeyBase64 = base64.StdEncoding.EncodeToString(e.Key)
	}
	for _, h := range e.Headers {
		dh := dumpHeader{Key: h.Key}
		if utf8.Valid(h.Value) {
			dh.Value = string(h.Value)
		} else {
			dh.ValueBase64 = base64.StdEncoding.EncodeToString(h.Value)
		}
		l.Headers = append(l.Headers, dh)
	}
	switch {
	case e.Tombstone:
		l.Tombstone = true
	case e.Poison != "":
		l.Poison = e.Poison
		if e.Err != nil {
			l.Error = e.Err.Error()
		}
		raw := base64.StdEncoding.EncodeToString(e.Value)
		l.Raw = &raw
	default:
		v := throttlejson.From(*e.Record)
		l.Value, l.SchemaID = &v, e.SchemaID
	}
	return l
}

func (s *session) dump(ctx context.Context) error {
	kc, err := s.kafka()
	if err != nil {
		return err
	}
	if _, err := s.checkTopic(ctx, kc, s.topic()); errors.Is(err, throttle.ErrNotCompacted) {
		fmt.Fprintf(s.stderr, "warning: %v; dumping it anyway\n", err)
	} else if err != nil {
		return err
	}
	codec, err := s.codec(s.topic())
	if err != nil {
		return err
	}
	var n int
	ranges, err := scanTopic(ctx, kc, s.topic(), codec, func(e entry) error {
		n++
		return writeJSON(s.stdout, e.line())
	})
	if err != nil {
		return s.scanErr(err)
	}
	var parts []string
	for _, r := range ranges {
		parts = append(parts, fmt.Sprintf("%d:%d-%d", r.Partition, r.First, r.End))
	}
	fmt.Fprintf(s.stderr, "dumped %d records of topic %s (partition:first-end offsets %s)\n", n, s.topic(), strings.Join(parts, " "))
	return nil
}

// scanErr names the registry when it is the reason a scan failed.
func (s *session) scanErr(err error) error {
	if errors.Is(err, throttle.ErrRegistryUnavailable) {
		return fmt.Errorf("schema registry %s: %w", s.cfg.RegistryURL, err)
	}
	return err
}

// scanTopic reads every partition of topic from its first offset up to the end offsets
// taken at start, in partition order, and hands each record to fn with its value
// decoded. It reads with follow.Scan, the read loop every Table uses, so it passes over
// nothing the log holds (empty and compacted batches, transaction markers and aborted
// transactions are handled there), and it tells a null value (a tombstone) from an
// empty one. A record whose schema cannot be fetched because the registry is away is
// retried until ctx ends, never reported as poison.
func scanTopic(ctx context.Context, kc cluster.Config, topic string, codec *throttle.Codec, fn func(entry) error) ([]follow.Range, error) {
	return follow.Scan(ctx, kc, topic, func(m kafka.Message) error {
		e, err := readEntry(ctx, topic, m, codec)
		if err != nil {
			return err
		}
		return fn(e)
	})
}

// readEntry copies a fetched record and decodes its value.
func readEntry(ctx context.Context, topic string, m kafka.Message, codec *throttle.Codec) (entry, error) {
	e := entry{Partition: m.Partition, Offset: m.Offset, Time: m.Time, Key: slices.Clone(m.Key)}
	for _, h := range m.Headers {
		e.Headers = append(e.Headers, kafka.Header{Key: h.Key, Value: slices.Clone(h.Value)})
	}
	if len(m.Key) == 0 { // no customer: poison, as a table counts it
		e.Poison, e.Err = "no_key", errors.New("a throttle record is keyed by its customer; this one has no key")
		e.Value = slices.Clone(m.Value)
		return e, nil
	}
	if m.Value == nil {
		e.Tombstone = true
		return e, nil
	}
	e.Value = slices.Clone(m.Value) // an empty, non-nil value is not a tombstone: Clone keeps it so
	rec, err := decode(ctx, codec, e.Value)
	if err != nil {
		if reason := throttle.PoisonReason(err); reason != "" {
			e.Poison, e.Err = reason, err
			return e, nil
		}
		return e, fmt.Errorf("decode %s/%d@%d: %w", topic, m.Partition, m.Offset, err)
	}
	if rec.Customer != string(e.Key) {
		e.Poison, e.Err = "key_mismatch", fmt.Errorf("record for customer %q under key %q", rec.Customer, e.Key)
		return e, nil
	}
	e.Record = &rec
	e.SchemaID = int(binary.BigEndian.Uint32(e.Value[1:5]))
	return e, nil
}

// decode decodes a value, retrying while the registry cannot be reached: skipping the
// record would drop a throttle from the dump (or from restore's view of the target).
func decode(ctx context.Context, codec *throttle.Codec, value []byte) (throttle.Record, error) {
	backoff := 50 * time.Millisecond
	for {
		rec, err := codec.Decode(value)
		if !errors.Is(err, throttle.ErrRegistryUnavailable) {
			return rec, err
		}
		if !wait.Sleep(ctx, backoff) {
			return rec, err
		}
		backoff = min(2*backoff, time.Second)
	}
}
