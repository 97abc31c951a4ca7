package fetch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/segmentio/kafka-go/compress"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/twmb/franz-go/pkg/kmsg"
)

var fetchCases = flag.Int("fetch.cases", 300, "random record sets TestBatchesMatchKafkaGo decodes")

// readRecord is one record as a decoder hands it out.
type readRecord struct {
	Offset     int64
	Time       time.Time
	Key, Value []byte // nil is null
	Headers    []protocol.Header
}

// randomRecordSet writes one record batch as a broker serves it: random records (null,
// empty and long keys and values, headers, times) at offsets with the gaps compaction
// leaves, sometimes a compacted tail, any codec. It returns the batch, its records and its
// last offset.
func randomRecordSet(t testing.TB, rng *rand.Rand, base int64) ([]byte, []readRecord, int64) {
	bytesOrNil := func() []byte {
		switch rng.IntN(4) {
		case 0:
			return nil
		case 1:
			return []byte{}
		default:
			b := make([]byte, rng.IntN(300))
			for i := range b {
				b[i] = byte(rng.IntN(256))
			}
			return b
		}
	}
	first := rng.Int64N(1 << 42)
	var body []byte
	var want []readRecord
	off := base
	n := rng.IntN(40) // 0: an empty batch the cleaner kept
	for i := range n {
		if i > 0 {
			off += 1 + int64(rng.IntN(3))
		}
		r := readRecord{Offset: off, Time: time.UnixMilli(first + rng.Int64N(100000)), Key: bytesOrNil(), Value: bytesOrNil()}
		rec := kmsg.Record{TimestampDelta64: r.Time.UnixMilli() - first, OffsetDelta: int32(off - base), Key: r.Key, Value: r.Value}
		for range rng.IntN(3) {
			h := kmsg.Header{Key: string(bytesOrNil()), Value: bytesOrNil()}
			rec.Headers = append(rec.Headers, h)
			r.Headers = append(r.Headers, protocol.Header{Key: h.Key, Value: h.Value})
		}
		rec.Length = int32(len(rec.AppendTo(nil)) - 1) // everything after the length itself
		body = rec.AppendTo(body)
		want = append(want, r)
	}
	last := off + int64(rng.IntN(3)) // a compacted tail
	codec := compress.Compression(rng.IntN(5))
	if codec != compress.None {
		var z bytes.Buffer
		w := codec.Codec().NewWriter(&z)
		if _, err := w.Write(body); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		body = z.Bytes()
	}
	b := kmsg.RecordBatch{FirstOffset: base, Length: int32(49 + len(body)), Magic: 2, Attributes: int16(codec),
		LastOffsetDelta: int32(last - base), FirstTimestamp: first, MaxTimestamp: first + 100000, ProducerID: -1,
		NumRecords: int32(n), Records: body}
	raw := b.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[17:21], crc32.Checksum(raw[21:], castagnoli))
	return raw, want, last
}

// kafkaGoRecords reads an answer's records with kafka-go's own decoder, the one the
// read loop used before.
func kafkaGoRecords(t *testing.T, answer []byte) []readRecord {
	var rs protocol.RecordSet
	sized := binary.BigEndian.AppendUint32(nil, uint32(len(answer)))
	if _, err := rs.ReadFrom(bytes.NewReader(append(sized, answer...))); err != nil {
		t.Fatal(err)
	}
	if rs.Records == nil {
		return nil
	}
	var got []readRecord
	for {
		rec, err := rs.Records.ReadRecord()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return got
			}
			t.Fatal(err)
		}
		r := readRecord{Offset: rec.Offset, Time: rec.Time, Headers: rec.Headers}
		if rec.Key != nil {
			r.Key, _ = protocol.ReadAll(rec.Key)
			r.Key = append([]byte{}, r.Key...)
		}
		if rec.Value != nil {
			r.Value, _ = protocol.ReadAll(rec.Value)
			r.Value = append([]byte{}, r.Value...)
		}
		if len(r.Headers) == 0 {
			r.Headers = nil
		}
		got = append(got, r)
	}
}

// decoded reads every record of the batches batchesIn finds.
func decoded(t *testing.T, batches []Batch) []readRecord {
	var got []readRecord
	for i := range batches {
		b := &batches[i]
		err := b.Each(func(offset int64, rec *kmsg.Record) error {
			if offset < b.Base || offset > b.Last {
				t.Fatalf("record at %d outside its batch's range %d-%d", offset, b.Base, b.Last)
			}
			r := readRecord{Offset: offset, Time: b.Time(rec), Key: rec.Key, Value: rec.Value}
			for _, h := range rec.Headers {
				r.Headers = append(r.Headers, protocol.Header{Key: h.Key, Value: h.Value})
			}
			got = append(got, r)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return got
}

func sameBytes(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }

func sameRecords(t *testing.T, got, want []readRecord) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Offset != w.Offset || !g.Time.Equal(w.Time) || !sameBytes(g.Key, w.Key) || !sameBytes(g.Value, w.Value) || len(g.Headers) != len(w.Headers) {
			t.Fatalf("record %d: got offset %d time %v key %q value %q %d headers, want %d %v %q %q %d",
				i, g.Offset, g.Time, g.Key, g.Value, len(g.Headers), w.Offset, w.Time, w.Key, w.Value, len(w.Headers))
		}
		for j := range w.Headers {
			if g.Headers[j].Key != w.Headers[j].Key || !bytes.Equal(g.Headers[j].Value, w.Headers[j].Value) {
				t.Fatalf("record %d header %d: got %q=%q, want %q=%q", i, j, g.Headers[j].Key, g.Headers[j].Value, w.Headers[j].Key, w.Headers[j].Value)
			}
		}
	}
}

// TestBatchesMatchKafkaGo decodes random answers (several batches, empty ones and
// compacted tails, every codec, null and empty keys and values, headers) and checks every
// record against what was written and against kafka-go's own decoder, and each batch's
// last offset. An answer cut anywhere yields the whole batches before the cut and says
// it was cut.
func TestBatchesMatchKafkaGo(t *testing.T) {
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	for c := range *fetchCases {
		var answer []byte
		var want []readRecord
		var ends []int // where each batch ends in answer
		var lasts []int64
		base := rng.Int64N(1 << 40)
		for range 1 + rng.IntN(4) {
			raw, recs, last := randomRecordSet(t, rng, base)
			answer = append(answer, raw...)
			ends = append(ends, len(answer))
			lasts = append(lasts, last)
			want = append(want, recs...)
			base = last + 1 + rng.Int64N(5)
		}
		batches, partial, err := Batches(answer)
		if err != nil || partial {
			t.Fatalf("case %d: err %v, partial %v", c, err, partial)
		}
		if len(batches) != len(ends) {
			t.Fatalf("case %d: %d batches, want %d", c, len(batches), len(ends))
		}
		for i, b := range batches {
			if b.Last != lasts[i] {
				t.Fatalf("case %d batch %d: last offset %d, want %d", c, i, b.Last, lasts[i])
			}
		}
		sameRecords(t, decoded(t, batches), want)
		sameRecords(t, kafkaGoRecords(t, answer), want)

		cut := rng.IntN(len(answer))
		batches, partial, err = Batches(answer[:cut])
		whole := 0
		for whole < len(ends) && ends[whole] <= cut {
			whole++
		}
		if err != nil || len(batches) != whole || partial != (cut > 0 && (whole == 0 || ends[whole-1] != cut)) {
			t.Fatalf("case %d cut at %d of %d: %d batches (want %d), partial %v, err %v", c, cut, len(answer), len(batches), whole, partial, err)
		}
	}
}

// TestBatchesInRefusesDamage: a flipped bit fails the checksum, an old message format is
// named, and neither is read as records.
func TestBatchesInRefusesDamage(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	raw, _, _ := randomRecordSet(t, rng, 7)
	for _, c := range []struct {
		name string
		at   int
		want string
	}{
		{"a bit of a record", len(raw) - 1, "checksum"},
		{"the batch's attributes", 22, "checksum"},
		{"the magic byte", 16, "magic"},
	} {
		damaged := bytes.Clone(raw)
		damaged[c.at] ^= 0x01
		if _, _, err := Batches(damaged); err == nil || !bytes.Contains([]byte(err.Error()), []byte(c.want)) {
			t.Errorf("%s damaged: err %v, want one that says %q", c.name, err, c.want)
		}
	}
}

// FuzzBatchRecords wraps any bytes as the records of a batch with a valid checksum (what
// a broker could relay from a broken producer) and reads them: an error or records inside
// the batch's range, never a panic or a read past the batch. The first four bytes are the
// record count, the fifth the attributes (compression aside).
func FuzzBatchRecords(f *testing.F) {
	// Small seeds: the fuzzer minimizes every input that finds new code, and a large one
	// keeps it minimizing instead of fuzzing.
	for n := range 4 {
		in := binary.BigEndian.AppendUint32(nil, uint32(n))
		in = append(in, 0)
		for i := range n {
			rec := kmsg.Record{OffsetDelta: int32(2 * i), Key: []byte("k"), Value: []byte{0, 1}, TimestampDelta64: int64(i)}
			if i == 1 {
				rec.Key, rec.Headers = nil, []kmsg.Header{{Key: "h", Value: []byte("v")}}
			}
			rec.Length = int32(len(rec.AppendTo(nil)) - 1)
			in = rec.AppendTo(in)
		}
		f.Add(in)
	}
	f.Add([]byte{0x40, 0, 0, 0, attrControl, 0x01})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 5 {
			return
		}
		count, attrs, records := int32(binary.BigEndian.Uint32(in)), int16(in[4])&^attrCompression, in[5:]
		b := kmsg.RecordBatch{FirstOffset: 100, Length: int32(49 + len(records)), Magic: 2, Attributes: attrs,
			LastOffsetDelta: 10, NumRecords: count, Records: records}
		raw := b.AppendTo(nil)
		binary.BigEndian.PutUint32(raw[17:21], crc32.Checksum(raw[21:], castagnoli))
		batches, partial, err := Batches(raw)
		if err != nil || partial || len(batches) != 1 {
			t.Fatalf("a well-framed batch: %d batches, partial %v, err %v", len(batches), partial, err)
		}
		n := 0
		err = batches[0].Each(func(offset int64, rec *kmsg.Record) error {
			if offset < 100 || offset > 110 {
				t.Fatalf("record at %d handed out from a batch of offsets 100-110", offset)
			}
			n++
			_ = batches[0].Time(rec)
			return nil
		})
		if err != nil && !errors.Is(err, ErrBadRecord) {
			t.Fatalf("unexpected error %v", err)
		}
		if n > len(records) {
			t.Fatalf("%d records read from %d bytes", n, len(records))
		}
		_ = batches[0].ControlType()
	})
}
