package follow

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"
	"github.com/segmentio/kafka-go/protocol"
	fetchAPI "github.com/segmentio/kafka-go/protocol/fetch"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// A fetch goes through kafka-go's transport (connections, TLS, SASL, the partition
// leader's address), but its answer is decoded here, with franz-go's kmsg: kafka-go's own
// decoder copies every record twice and does not decode a batch's last offset, which is
// what lets the read loop pass over an empty batch or a compacted tail in one step.

// maxFetchResponse bounds the answer a fetch reads: a peer that is no Kafka broker (a TLS
// listener, an HTTP server) announces sizes far beyond it.
const maxFetchResponse = 256 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// fetchRequest is kafka-go's Fetch request, sent and answered by fetchRequest itself
// (kafka-go's RawExchanger hook) at the version the connection negotiated.
type fetchRequest struct {
	*fetchAPI.Request
	clientID string
	version  int16
}

// Required records the negotiated version; the exchange is always done here.
func (r *fetchRequest) Required(versions map[protocol.ApiKey]int16) bool {
	r.version = versions[protocol.Fetch]
	return true
}

// fetchCorrelation is the id of every fetch: a connection carries one exchange at a time.
const fetchCorrelation = 1

// RawExchange writes the request and reads and decodes its answer.
func (r *fetchRequest) RawExchange(rw io.ReadWriter) (protocol.Message, error) {
	if r.version < 4 || r.version >= 12 { // v4 brings read-committed; v12 a new header
		return nil, fmt.Errorf("fetch v%d negotiated: only v4 to v11 are read", r.version)
	}
	if err := protocol.WriteRequest(rw, r.version, fetchCorrelation, r.clientID, r.Request); err != nil {
		return nil, err
	}
	var head [4]byte
	if _, err := io.ReadFull(rw, head[:]); err != nil {
		return nil, err
	}
	size := int32(binary.BigEndian.Uint32(head[:]))
	if size < 4 || size > maxFetchResponse {
		return nil, fmt.Errorf("fetch answer announces %d bytes: not a Kafka broker's answer", size)
	}
	frame := make([]byte, size)
	if _, err := io.ReadFull(rw, frame); err != nil {
		return nil, err
	}
	if id := int32(binary.BigEndian.Uint32(frame)); id != fetchCorrelation {
		return nil, fmt.Errorf("fetch answer has correlation id %d, want %d", id, fetchCorrelation)
	}
	body := frame[4:]
	res := kmsg.NewPtrFetchResponse()
	res.Version = r.version
	if err := res.ReadFrom(body); err != nil {
		return nil, fmt.Errorf("decode fetch answer: %w", err)
	}
	return &fetchResponse{res}, nil
}

// fetchResponse carries the decoded answer back through kafka-go's transport.
type fetchResponse struct{ *kmsg.FetchResponse }

// ApiKey names the answer kafka-go's transport expects: Fetch.
func (*fetchResponse) ApiKey() protocol.ApiKey { return protocol.Fetch }

// fetched is one partition's part of a fetch answer.
type fetched struct {
	HighWatermark int64
	Aborted       []kmsg.FetchResponseTopicPartitionAbortedTransaction
	Batches       []batch
	// Partial reports bytes after the last whole batch: the size limit cut a batch.
	Partial bool
}

// batch is one record batch of the log, its records decompressed.
type batch struct {
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

func (b *batch) transactional() bool { return b.Attributes&attrTransactional != 0 }
func (b *batch) control() bool       { return b.Attributes&attrControl != 0 }

// batchesIn splits a partition's record bytes into batches. A batch the size limit cut
// is left out (and reported); a batch that fails its checksum is an error, so the caller
// retries instead of reading a damaged record.
func batchesIn(raw []byte) (out []batch, partial bool, err error) {
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
		b := batch{Base: kb.FirstOffset, Last: kb.FirstOffset + int64(kb.LastOffsetDelta), Attributes: kb.Attributes,
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

// errBadRecord reports a batch whose records do not decode.
var errBadRecord = errors.New("record does not decode")

// each calls fn with every record of the batch, in offset order, and stops at fn's first
// error. Key and value are slices of the fetched bytes: nil for null, empty for empty.
func (b *batch) each(fn func(offset int64, rec *kmsg.Record) error) error {
	rest := b.records
	var rec kmsg.Record
	for range b.count {
		l, n := binary.Varint(rest)
		if n <= 0 || l < 0 || l > int64(len(rest)-n) {
			return fmt.Errorf("batch at offset %d: %w", b.Base, errBadRecord)
		}
		if err := rec.ReadFrom(rest[:n+int(l)]); err != nil {
			return fmt.Errorf("batch at offset %d: %w: %w", b.Base, errBadRecord, err)
		}
		rest = rest[n+int(l):]
		offset := b.Base + int64(rec.OffsetDelta)
		if offset < b.Base || offset > b.Last { // a record outside its batch would move the position past others
			return fmt.Errorf("batch at offset %d: record at %d outside its range %d-%d: %w", b.Base, offset, b.Base, b.Last, errBadRecord)
		}
		if err := fn(offset, &rec); err != nil {
			return err
		}
	}
	return nil
}

// time is a record's timestamp: the broker's append time for the whole batch when the
// topic keeps that, else the producer's.
func (b *batch) time(rec *kmsg.Record) time.Time {
	if b.Attributes&attrLogAppendTime != 0 {
		return time.UnixMilli(b.maxTime)
	}
	return time.UnixMilli(b.firstTime + rec.TimestampDelta64)
}

// controlType is a transaction marker's type (0 abort, 1 commit), or -1 when the marker
// batch holds no record (compaction removed it).
func (b *batch) controlType() int16 {
	t := int16(-1)
	_ = b.each(func(_ int64, rec *kmsg.Record) error {
		if len(rec.Key) >= 4 {
			t = int16(binary.BigEndian.Uint16(rec.Key[2:4]))
		}
		return io.EOF // the first record is the marker
	})
	return t
}

// partitionOf finds the fetched partition in a decoded answer and checks its errors.
func partitionOf(res *kmsg.FetchResponse, topic string, part int) (*kmsg.FetchResponseTopicPartition, error) {
	if res.ErrorCode != 0 {
		return nil, kafka.Error(res.ErrorCode)
	}
	for i := range res.Topics {
		t := &res.Topics[i]
		if t.Topic != topic {
			continue
		}
		for j := range t.Partitions {
			if p := &t.Partitions[j]; p.Partition == int32(part) {
				if p.ErrorCode != 0 {
					return nil, kafka.Error(p.ErrorCode)
				}
				return p, nil
			}
		}
	}
	return nil, errors.New("answer names no such partition")
}
