package throttle

import (
	"reflect"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"
)

// FuzzFastDecodeMatchesGoavro checks the v1 fast path against goavro, the reference: the
// same bodies are accepted, with the same record, and the same bodies rejected.
func FuzzFastDecodeMatchesGoavro(f *testing.F) {
	ref, err := goavro.NewCodec(schemaV1)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	for _, r := range []Record{
		{ID: "a", Customer: "acme", Limit: 20, Window: time.Minute, CreatedAt: now, ExpiresAt: now.Add(time.Hour), SetBy: "op"},
		{ID: "b", Customer: "Café", Limit: 0, Window: time.Second, CreatedAt: now, ExpiresAt: now.Add(time.Hour), Mode: ModeShadow,
			Reason: Reason{Kind: ReasonAutomatic, Note: "n", Metric: "traffic_share", Value: 0.93}, SetBy: "p-1"},
	} {
		b, err := ref.BinaryFromNative(nil, toNative(&r))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, body []byte) {
		want, werr := decodeGeneric(ref, 1, body)
		got, gerr := decodeV1(body)
		if gerr == nil {
			gerr = got.Validate()
		}
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("goavro says %v, fast path says %v", werr, gerr)
		}
		if werr == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("got %+v, want goavro's %+v", got, want)
		}
	})
}
