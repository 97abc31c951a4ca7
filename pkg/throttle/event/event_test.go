package event

import (
	"errors"
	"testing"
	"time"
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
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Decode([]byte(v)); !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"customer":"acme","ingested_at":"2026-01-01T00:00:00Z","payload":{"a":1}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			return
		}
		if _, err := Encode(&e); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
	})
}
