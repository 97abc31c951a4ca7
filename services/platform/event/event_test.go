package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"
	"unicode/utf8"
)

func TestRoundTrip(t *testing.T) {
	in := Event{ID: "e1", Customer: "acme", Payload: []byte(`{"n":1}`), IngestedAt: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)}
	b, err := Encode(&in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if out.ID != in.ID || out.Customer != in.Customer || string(out.Payload) != string(in.Payload) || !out.IngestedAt.Equal(in.IngestedAt) {
		t.Fatalf("got %+v, want %+v", out, in)
	}
}

func TestDecodeMalformed(t *testing.T) {
	for name, v := range map[string]string{
		"not json":         `nope`,
		"no customer":      `{"ingested_at":"2026-01-01T00:00:00Z"}`,
		"control customer": `{"customer":"a\u0001","ingested_at":"2026-01-01T00:00:00Z"}`,
		"no time":          `{"customer":"acme"}`,
		// encoding/json reads it (the field names differ in case); Encode would refuse it.
		"payload with invalid UTF-8": "{\"Customer\":\"0\",\"Payload\":{\"\xd0\":1},\"ingested_at\":\"2026-01-01T00:00:00Z\"}",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Decode([]byte(v)); !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
		})
	}
}

// Decode reads what Append writes by hand: whatever it reads that way, encoding/json
// reads as the same event.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"customer":"acme","ingested_at":"2026-01-01T00:00:00Z","payload":{"a":1}}`))
	f.Add([]byte(`{"id":"e1","customer":"acme","payload":[1, 2],"ingested_at":"2026-01-01T00:00:00.123456789+02:00"}`))
	f.Add([]byte(`{"customer":"acme","payload":1,"ingested_at":"2026-01-01T00:00:00Z","ingested_at":"2027-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"customer":"acme","payload":{"ingested_at":"x"},"ingested_at":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"id":"a\"b","customer":"acme","ingested_at":"2026-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if e, ok := decodeAppended(b); ok {
			var ref Event
			if err := json.Unmarshal(b, &ref); err != nil {
				t.Fatalf("read %q by hand; encoding/json refuses it: %v", b, err)
			}
			if e.ID != ref.ID || e.Customer != ref.Customer || !e.IngestedAt.Equal(ref.IngestedAt) || !bytes.Equal(e.Payload, ref.Payload) {
				t.Fatalf("read %q by hand as %+v; encoding/json reads %+v", b, e, ref)
			}
		}
		e, err := Decode(b)
		if err != nil {
			return
		}
		if _, err := Encode(&e); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
	})
}

// Every event Append writes is read by hand, not by encoding/json.
func TestDecodeReadsAppendedEventsByHand(t *testing.T) {
	for _, e := range []Event{
		{Customer: "acme", IngestedAt: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)},
		{ID: "e-1", Customer: "acme", Payload: []byte(`{"n":[1,2,{"ingested_at":"x"}]}`), IngestedAt: time.Now()},
		{ID: "e-2", Customer: "acme", Payload: []byte(`"s"`), IngestedAt: time.Now().In(time.FixedZone("x", 3600))},
	} {
		b, err := Encode(&e)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := decodeAppended(b)
		if !ok || got.ID != e.ID || got.Customer != e.Customer || !got.IngestedAt.Equal(e.IngestedAt) || !bytes.Equal(got.Payload, e.Payload) {
			t.Errorf("decodeAppended(%s) = %+v, %v; want %+v", b, got, ok, e)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	v, err := Encode(&Event{ID: "e-123", Customer: "customer-42", Payload: []byte(`{"n":1,"kind":"click"}`), IngestedAt: time.Now()})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(v); err != nil {
			b.Fatal(err)
		}
	}
}

// Append builds the JSON by hand; encoding/json is the reference: what either writes
// must read back as the same event.
func FuzzAppendMatchesEncodingJSON(f *testing.F) {
	f.Add("e1", "acme", []byte(`{"n":1}`), int64(1767322800123456789))
	f.Add("", "a\"b<&>\u2028", []byte(` [1, 2] `), int64(0))
	f.Add("id", "acme", []byte(`{"n":`), int64(-1))
	f.Add("\xff", "acme", []byte(nil), int64(5))
	f.Fuzz(func(t *testing.T, id, customer string, payload []byte, nanos int64) {
		in := Event{ID: id, Customer: customer, Payload: payload, IngestedAt: time.Unix(0, nanos).UTC()}
		got, err := Encode(&in)
		switch {
		case len(payload) > 0 && (!json.Valid(payload) || !utf8.Valid(payload)):
			if err == nil {
				t.Fatalf("payload %q is not JSON in UTF-8, but Encode took it", payload)
			}
			return
		case !utf8.ValidString(id) || !utf8.ValidString(customer):
			if err == nil {
				t.Fatal("text that is not UTF-8 was encoded")
			}
			return
		case err != nil:
			t.Fatalf("Encode: %v", err)
		}
		// A Stamp, as ingestion encodes a request's events, writes the very same bytes.
		s, err := NewStamp(customer, in.IngestedAt)
		if err != nil {
			t.Fatalf("NewStamp: %v", err)
		}
		if viaStamp, err := s.Append(nil, []byte(id), payload); err != nil || !bytes.Equal(viaStamp, got) {
			t.Fatalf("Stamp.Append: %s (%v)\nAppend: %s", viaStamp, err, got)
		}
		want, err := json.Marshal(&in)
		if err != nil {
			return // a time encoding/json refuses (year beyond 9999): nothing to compare
		}
		var a, b Event
		if err := json.Unmarshal(got, &a); err != nil {
			t.Fatalf("Append wrote %s, which does not parse: %v", got, err)
		}
		if err := json.Unmarshal(want, &b); err != nil {
			t.Fatal(err)
		}
		var pa, pb any // payloads compared as values: escapes and spaces may differ
		_ = json.Unmarshal(a.Payload, &pa)
		_ = json.Unmarshal(b.Payload, &pb)
		if a.ID != b.ID || a.Customer != b.Customer || !a.IngestedAt.Equal(b.IngestedAt) || !reflect.DeepEqual(pa, pb) {
			t.Fatalf("Append: %s\nencoding/json: %s", got, want)
		}
	})
}
