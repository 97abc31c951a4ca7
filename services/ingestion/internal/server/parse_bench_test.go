package server

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/go-json-experiment/json/jsontext"
)

// BenchmarkParseEvents parses request bodies of 1, 10 and 100 events as BenchmarkIngest
// sends them, beside the floor of the tokenizer it is built on: checking the same body
// in one jsontext ReadValue, without reading any field out of it.
func BenchmarkParseEvents(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		body := eventsBody(n)
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			var dst []inEvent
			for b.Loop() {
				events, aerr := appendEvents(dst, body, "")
				if aerr != nil || len(events) != n {
					b.Fatalf("got %d events, %v", len(events), aerr)
				}
				dst = events[:0]
			}
		})
		b.Run(fmt.Sprintf("jsontext-floor/events=%d", n), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			var d jsontext.Decoder
			for b.Loop() {
				d.Reset(bytes.NewReader(body))
				if _, err := d.ReadValue(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// eventsBody is a request of n events of one customer, an array when n > 1.
func eventsBody(n int) []byte {
	var buf bytes.Buffer
	if n > 1 {
		buf.WriteByte('[')
	}
	for i := range n {
		if i > 0 {
			buf.WriteByte(',')
		}
		fmt.Fprintf(&buf, `{"customer":"customer-07","id":"1234-%d","payload":{"kind":"page_view","path":"/pricing","session":"5f2b9c1e","ms":132}}`, i)
	}
	if n > 1 {
		buf.WriteByte(']')
	}
	return buf.Bytes()
}
