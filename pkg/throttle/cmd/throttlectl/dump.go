package main

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

func dumpCommand() *command {
	return &command{
		name: "dump", summary: "print every record of the topic as JSON lines",
		help: `
Reads every partition of the topic from its first offset up to the end offset it had when
the dump started, and prints one JSON object per record, partition by partition, in
offset order: partition, offset, timestamp, key, headers, and either the decoded throttle
("value"), "tombstone": true, or "poison" (bad_magic, truncated, unknown_schema, bad_body,
invalid, key_mismatch) with the raw value in base64. A summary goes to stderr.

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
	Value     *throttle.RecordJSON `json:"value,omitempty"`
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
		v := throttle.NewRecordJSON(*e.Record)
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
		parts = append(parts, fmt.Sprintf("%d:%d-%d", r.id, r.first, r.end))
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

// partRange is the part of a partition a scan reads: from the partition's first offset to
// the end offset it had when the scan started. Records written later are not read.
type partRange struct {
	id         int
	first, end int64
}

// scanTopic reads every partition of topic from its first offset up to the end offsets
// taken at start, in partition order, and hands each record to fn with its value
// decoded. A record whose schema cannot be fetched because the registry is away is
// retried until ctx ends, never reported as poison.
//
// It fetches with kafka.Client rather than a kafka.Reader because a fetch tells a null
// value (a tombstone) from an empty one, which the Reader returns alike, and because it
// can tell that nothing is left below the end offset: compaction leaves gaps, and the
// records just below the end may be gone.
func scanTopic(ctx context.Context, kc throttle.KafkaConfig, topic string, codec *throttle.Codec, fn func(entry) error) ([]partRange, error) {
	cl, done := newClient(kc)
	defer done()
	ranges, err := snapshot(ctx, cl, topic)
	if err != nil {
		return nil, err
	}
	for _, pr := range ranges {
		if err := scanPartition(ctx, cl, topic, pr, codec, fn); err != nil {
			return ranges, err
		}
	}
	return ranges, nil
}

// snapshot lists the topic's partitions with their first and end offsets.
func snapshot(ctx context.Context, cl *kafka.Client, topic string) ([]partRange, error) {
	meta, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("metadata of topic %s: %w", topic, err)
	}
	var ids []int
	for _, t := range meta.Topics {
		if t.Name == topic {
			for _, p := range t.Partitions {
				ids = append(ids, p.ID)
			}
		}
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("topic %s does not exist; create it with throttlectl ensure-topic", topic)
	}
	slices.Sort(ids)
	offs, err := listOffsets(ctx, cl, topic, ids)
	if err != nil {
		return nil, err
	}
	out := make([]partRange, 0, len(ids))
	for _, id := range ids {
		out = append(out, partRange{id: id, first: offs[id].FirstOffset, end: offs[id].LastOffset})
	}
	return out, nil
}

// listOffsets returns the first and end offsets of partitions. The first request after
// a broker restart can fail for some partitions, so those are asked again until ctx ends.
func listOffsets(ctx context.Context, cl *kafka.Client, topic string, ids []int) (map[int]kafka.PartitionOffsets, error) {
	backoff := 50 * time.Millisecond
	for {
		reqs := make([]kafka.OffsetRequest, 0, 2*len(ids))
		for _, id := range ids {
			reqs = append(reqs, kafka.FirstOffsetOf(id), kafka.LastOffsetOf(id))
		}
		resp, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
		if err != nil {
			return nil, fmt.Errorf("list offsets of topic %s: %w", topic, err)
		}
		out := map[int]kafka.PartitionOffsets{}
		var perr error
		for _, po := range resp.Topics[topic] {
			if po.Error != nil {
				perr = fmt.Errorf("list offsets of %s/%d: %w", topic, po.Partition, po.Error)
				continue
			}
			out[po.Partition] = po
		}
		for _, id := range ids {
			if _, ok := out[id]; !ok && perr == nil {
				perr = fmt.Errorf("list offsets of %s/%d: no answer", topic, id)
			}
		}
		if perr == nil {
			return out, nil
		}
		if !sleep(ctx, backoff) {
			return nil, fmt.Errorf("%w (gave up: %w)", perr, ctx.Err())
		}
		backoff = min(2*backoff, time.Second)
	}
}

func scanPartition(ctx context.Context, cl *kafka.Client, topic string, pr partRange, codec *throttle.Codec, fn func(entry) error) error {
	off := pr.first
	for off < pr.end {
		resp, err := cl.Fetch(ctx, &kafka.FetchRequest{
			Topic: topic, Partition: pr.id, Offset: off,
			MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 250 * time.Millisecond,
		})
		if err != nil {
			return fmt.Errorf("fetch %s/%d@%d: %w", topic, pr.id, off, err)
		}
		if resp.Error != nil {
			if !errors.Is(resp.Error, kafka.OffsetOutOfRange) {
				return fmt.Errorf("fetch %s/%d@%d: %w", topic, pr.id, off, resp.Error)
			}
			// Compaction or retention moved the log start past off since the snapshot:
			// what was below it is gone, go on from the new start.
			offs, err := listOffsets(ctx, cl, topic, []int{pr.id})
			if err != nil {
				return err
			}
			if start := offs[pr.id].FirstOffset; start > off {
				off = start
				continue
			}
			return fmt.Errorf("fetch %s/%d@%d: %w", topic, pr.id, off, resp.Error)
		}
		read := 0
		for off < pr.end {
			r, err := resp.Records.ReadRecord()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("read records of %s/%d@%d: %w", topic, pr.id, off, err)
			}
			if r.Offset < off { // a batch can start before the offset asked for
				continue
			}
			if r.Offset >= pr.end {
				off = pr.end
				break
			}
			e, err := readEntry(ctx, topic, pr.id, r, codec)
			if err != nil {
				return err
			}
			if err := fn(e); err != nil {
				return err
			}
			off = r.Offset + 1
			read++
		}
		if read == 0 {
			// A fetch returns the records at or after off; none below the end means
			// compaction removed the tail of the snapshot (or only transaction markers
			// are left). Never wait for the offset end-1 to arrive.
			break
		}
	}
	return nil
}

// readEntry copies a fetched record and decodes its value.
func readEntry(ctx context.Context, topic string, part int, r *kafka.Record, codec *throttle.Codec) (entry, error) {
	e := entry{Partition: part, Offset: r.Offset, Time: r.Time, Headers: slices.Clone(r.Headers)}
	var err error
	if r.Key != nil {
		if e.Key, err = io.ReadAll(r.Key); err != nil {
			return e, fmt.Errorf("read key of %s/%d@%d: %w", topic, part, r.Offset, err)
		}
	}
	if r.Value == nil {
		e.Tombstone = true
		return e, nil
	}
	// io.ReadAll returns an empty, non-nil slice for an empty value: not a tombstone.
	if e.Value, err = io.ReadAll(r.Value); err != nil {
		return e, fmt.Errorf("read value of %s/%d@%d: %w", topic, part, r.Offset, err)
	}
	rec, err := decode(ctx, codec, e.Value)
	if err != nil {
		if reason := throttle.PoisonReason(err); reason != "" {
			e.Poison, e.Err = reason, err
			return e, nil
		}
		return e, fmt.Errorf("decode %s/%d@%d: %w", topic, part, r.Offset, err)
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
		if !sleep(ctx, backoff) {
			return rec, err
		}
		backoff = min(2*backoff, time.Second)
	}
}

// sleep waits d or until ctx ends; it reports whether the full d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
