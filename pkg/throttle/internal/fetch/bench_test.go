package fetch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"testing"

	"github.com/segmentio/kafka-go/protocol"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// throttleAnswer is a partition's record bytes as a broker serves the throttle topic:
// uncompressed batches of records with a customer key and a throttle-sized value.
func throttleAnswer(batches, perBatch int) (raw []byte, records int) {
	value := bytes.Repeat([]byte{7}, 120)
	for b := range batches {
		var body []byte
		for i := range perBatch {
			rec := kmsg.Record{OffsetDelta: int32(i), TimestampDelta64: int64(i), Key: []byte("customer-" + string(rune('a'+i%26))), Value: value}
			rec.Length = int32(len(rec.AppendTo(nil)) - 1)
			body = rec.AppendTo(body)
		}
		kb := kmsg.RecordBatch{FirstOffset: int64(b * perBatch), Length: int32(49 + len(body)), Magic: 2,
			LastOffsetDelta: int32(perBatch - 1), NumRecords: int32(perBatch), Records: body, FirstTimestamp: 1_790_000_000_000}
		one := kb.AppendTo(nil)
		binary.BigEndian.PutUint32(one[17:21], crc32.Checksum(one[21:], castagnoli))
		raw = append(raw, one...)
	}
	return raw, batches * perBatch
}

// BenchmarkBatches decodes the same fetched bytes with kafka-go's record set decoder (what
// the read loop used before) and with Batches and Each, handing out every key and value.
func BenchmarkBatches(b *testing.B) {
	raw, n := throttleAnswer(64, 100)
	b.Run("kafka-go", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		sized := binary.BigEndian.AppendUint32(nil, uint32(len(raw)))
		sized = append(sized, raw...)
		for b.Loop() {
			var rs protocol.RecordSet
			if _, err := rs.ReadFrom(bytes.NewReader(sized)); err != nil {
				b.Fatal(err)
			}
			got := 0
			for {
				rec, err := rs.Records.ReadRecord()
				if errors.Is(err, io.EOF) {
					break
				} else if err != nil {
					b.Fatal(err)
				}
				k, _ := protocol.ReadAll(rec.Key)
				v, _ := protocol.ReadAll(rec.Value)
				if k == nil || v == nil {
					b.Fatal("record without key or value")
				}
				got++
			}
			if got != n {
				b.Fatalf("read %d records, want %d", got, n)
			}
		}
		b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "records/s")
	})
	b.Run("kmsg", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			batches, _, err := Batches(raw)
			if err != nil {
				b.Fatal(err)
			}
			got := 0
			for i := range batches {
				if err := batches[i].Each(func(_ int64, rec *kmsg.Record) error {
					if rec.Key == nil || rec.Value == nil {
						return errors.New("record without key or value")
					}
					got++
					return nil
				}); err != nil {
					b.Fatal(err)
				}
			}
			if got != n {
				b.Fatalf("read %d records, want %d", got, n)
			}
		}
		b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "records/s")
	})
}
