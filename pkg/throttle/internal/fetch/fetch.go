// Package fetch decodes the record batches of a Fetch answer: the hot path of a
// throttle table's rebuild and tail.
//
// Why it exists: kafka-go's own decoder copies every record twice, reads varints a byte
// at a time through an io.Reader, and does not decode a batch's last offset, so a reader
// had to search for the end of an empty or compacted batch with extra fetches. Records
// are decoded here with franz-go's kmsg instead. BenchmarkBatches compares the two
// decoders; BenchmarkRebuildRatio in pkg/throttle measures the rebuild end to end.
package fetch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"

	"github.com/segmentio/kafka-go/compress"
	"github.com/twmb/franz-go/pkg/kmsg"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Batch is one record batch of the log, its records decompressed.
type Batch struct {
	Base, Last int64 // the batch's offset range: compaction may leave it without records
	Attributes int16
	ProducerID int64
	firstTime  int64
	maxTime    int64
	count      int
	records    []byte
}

const (
	attrCompression   = 0x07
	attrLogAppendTime = 0x08
	attrTransactional = 0x10
	attrControl       = 0x20
)

// Transactional reports a batch of a transactional producer.
func (b *Batch) Transactional() bool { return b.Attributes&attrTransactional != 0 }

// Control reports a transaction marker batch.
func (b *Batch) Control() bool { return b.Attributes&attrControl != 0 }

// Batches splits a partition's record bytes into batches. A batch the size limit cut
// is left out (and reported); a batch that fails its checksum is an error, so the caller
// retries instead of reading a damaged record.
func Batches(raw []byte) (out []Batch, partial bool, err error) {
	for len(raw) > 0 {
		if len(raw) < 61 { // the v2 batch header
			return out, true, nil
		}
		size := int(int32(binary.BigEndian.Uint32(raw[8:12])))
		if size < 49 { // the header after the length field
			return out, false, fmt.Errorf("record batch at offset %d has length %d", int64(binary.BigEndian.Uint64(raw)), size)
		}
		if len(raw) < 12+size {
			return out, true, nil
		}
		one := raw[:12+size]
		raw = raw[12+size:]
		if magic := one[16]; magic != 2 {
			return out, false, fmt.Errorf("record batch at offset %d has magic %d: only v2 batches (Kafka 0.11+) are read", int64(binary.BigEndian.Uint64(one)), magic)
		}
		var kb kmsg.RecordBatch
		if err := kb.ReadFrom(one); err != nil {
			return out, false, fmt.Errorf("record batch at offset %d: %w", kb.FirstOffset, err)
		}
		if sum := crc32.Checksum(one[21:], castagnoli); sum != uint32(kb.CRC) {
			return out, false, fmt.Errorf("record batch at offset %d fails its checksum", kb.FirstOffset)
		}
		b := Batch{Base: kb.FirstOffset, Last: kb.FirstOffset + int64(kb.LastOffsetDelta), Attributes: kb.Attributes,
			ProducerID: kb.ProducerID, firstTime: kb.FirstTimestamp, maxTime: kb.MaxTimestamp, count: int(kb.NumRecords), records: kb.Records}
		if c := compress.Compression(kb.Attributes & attrCompression); c != compress.None {
			if b.records, err = decompress(c, kb.Records); err != nil {
				return out, false, fmt.Errorf("record batch at offset %d: %w", kb.FirstOffset, err)
			}
		}
		out = append(out, b)
	}
	return out, false, nil
}

func decompress(c compress.Compression, data []byte) ([]byte, error) {
	codec := c.Codec()
	if codec == nil {
		return nil, fmt.Errorf("unknown compression codec %d", c)
	}
	r := codec.NewReader(bytes.NewReader(data))
	defer r.Close()
	out, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("decompress %s: %w", codec.Name(), err)
	}
	return out, nil
}

// ErrBadRecord reports a batch whose records do not decode.
var ErrBadRecord = errors.New("record does not decode")

// Each calls fn with every record of the batch, in offset order, and stops at fn's first
// error. Key and value are slices of the fetched bytes: nil for null, empty for empty.
func (b *Batch) Each(fn func(offset int64, rec *kmsg.Record) error) error {
	rest := b.records
	var rec kmsg.Record
	for range b.count {
		l, n := binary.Varint(rest)
		if n <= 0 || l < 0 || l > int64(len(rest)-n) {
			return fmt.Errorf("batch at offset %d: %w", b.Base, ErrBadRecord)
		}
		if err := rec.ReadFrom(rest[:n+int(l)]); err != nil {
			return fmt.Errorf("batch at offset %d: %w: %w", b.Base, ErrBadRecord, err)
		}
		rest = rest[n+int(l):]
		offset := b.Base + int64(rec.OffsetDelta)
		if offset < b.Base || offset > b.Last { // a record outside its batch would move the position past others
			return fmt.Errorf("batch at offset %d: record at %d outside its range %d-%d: %w", b.Base, offset, b.Base, b.Last, ErrBadRecord)
		}
		if err := fn(offset, &rec); err != nil {
			return err
		}
	}
	return nil
}

// Time is a record's timestamp: the broker's append time for the whole batch when the
// topic keeps that, else the producer's.
func (b *Batch) Time(rec *kmsg.Record) time.Time {
	if b.Attributes&attrLogAppendTime != 0 {
		return time.UnixMilli(b.maxTime)
	}
	return time.UnixMilli(b.firstTime + rec.TimestampDelta64)
}

// ControlType is a transaction marker's type (0 abort, 1 commit), or -1 when the marker
// batch holds no record (compaction removed it).
func (b *Batch) ControlType() int16 {
	t := int16(-1)
	_ = b.Each(func(_ int64, rec *kmsg.Record) error {
		if len(rec.Key) >= 4 {
			t = int16(binary.BigEndian.Uint16(rec.Key[2:4]))
		}
		return io.EOF // the first record is the marker
	})
	return t
}
