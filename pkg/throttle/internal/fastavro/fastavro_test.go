package fastavro

import (
	"os"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"
)

// The fast path's correctness against goavro is FuzzFastDecodeMatchesGoavro in
// pkg/throttle, which compares whole records; this benchmark compares the two decoders.

func v1Codec(tb testing.TB) *goavro.Codec {
	schema, err := os.ReadFile("../../throttle.avsc")
	if err != nil {
		tb.Fatal(err)
	}
	c, err := goavro.NewCodec(string(schema))
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func v1Body(tb testing.TB, c *goavro.Codec) []byte {
	body, err := c.BinaryFromNative(nil, map[string]any{
		"id": "0b6d3c1e-8a4f-4d9e-9a51-6f1d2b7c4e10", "customer": "acme", "limit": int64(20), "window_ms": int64(60000),
		"created_at": time.UnixMilli(1_790_000_000_000), "expires_at": time.UnixMilli(1_790_003_600_000),
		"reason_kind": "AUTOMATIC", "reason_note": "events 312s old",
		"reason_metric": goavro.Union("string", "event_age_seconds"), "reason_value": goavro.Union("double", 312.0),
		"set_by": "processing-1", "mode": "ENFORCE",
	})
	if err != nil {
		tb.Fatal(err)
	}
	return body
}

func anyWindow(int64) error { return nil }

func TestDecodeV1ReadsWhatGoavroWrote(t *testing.T) {
	c := v1Codec(t)
	got, err := DecodeV1(v1Body(t, c), anyWindow)
	if err != nil {
		t.Fatal(err)
	}
	want := V1{ID: "0b6d3c1e-8a4f-4d9e-9a51-6f1d2b7c4e10", Customer: "acme", Limit: 20, WindowMillis: 60000,
		CreatedMillis: 1_790_000_000_000, ExpiresMillis: 1_790_003_600_000, Automatic: true,
		Note: "events 312s old", Metric: "event_age_seconds", Value: 312, SetBy: "processing-1"}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func BenchmarkDecode(b *testing.B) {
	c := v1Codec(b)
	body := v1Body(b, c)
	b.Run("goavro", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := c.NativeFromBinary(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fast-v1", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeV1(body, anyWindow); err != nil {
				b.Fatal(err)
			}
		}
	})
}
