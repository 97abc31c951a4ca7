package throttle

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func validRecord() Record {
	created := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	return Record{
		ID:        "0b6d3c1e-8a4f-4d9e-9a51-6f1d2b7c4e10",
		Customer:  "acme",
		Limit:     20,
		Window:    time.Minute,
		CreatedAt: created,
		ExpiresAt: created.Add(10 * time.Minute),
		Reason:    Reason{Kind: ReasonAutomatic, Note: "events 312s old while p50 is 2s", Metric: "event_age_seconds", Value: 312.5},
		SetBy:     "processing-7f9c",
		Mode:      ModeEnforce,
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Record)
		ok     bool
	}{
		{"valid", func(*Record) {}, true},
		{"limit zero blocks all", func(r *Record) { r.Limit = 0 }, true},
		{"unicode customer", func(r *Record) { r.Customer = "Café Ünïcode 東京" }, true},
		{"customer 256 bytes", func(r *Record) { r.Customer = strings.Repeat("a", 256) }, true},
		{"empty customer", func(r *Record) { r.Customer = "" }, false},
		{"customer 257 bytes", func(r *Record) { r.Customer = strings.Repeat("a", 257) }, false},
		{"invalid utf8", func(r *Record) { r.Customer = "ac\xffme" }, false},
		{"control char", func(r *Record) { r.Customer = "ac\nme" }, false},
		{"NUL", func(r *Record) { r.Customer = "ac\x00me" }, false},
		{"C1 control", func(r *Record) { r.Customer = "ac\u0085me" }, false},
		{"empty id", func(r *Record) { r.ID = "" }, false},
		{"negative limit", func(r *Record) { r.Limit = -1 }, false},
		{"zero window", func(r *Record) { r.Window = 0 }, false},
		{"negative window", func(r *Record) { r.Window = -time.Second }, false},
		{"sub-millisecond window", func(r *Record) { r.Window = time.Minute + time.Microsecond }, false},
		{"expires equal created", func(r *Record) { r.ExpiresAt = r.CreatedAt }, false},
		{"expires before created", func(r *Record) { r.ExpiresAt = r.CreatedAt.Add(-time.Second) }, false},
		{"unknown mode", func(r *Record) { r.Mode = 7 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := validRecord()
			tt.mutate(&r)
			err := r.Validate()
			if tt.ok && err != nil {
				t.Fatalf("got %v, want nil", err)
			}
			if !tt.ok && !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
		})
	}
}

func TestKeyIsPlainBytes(t *testing.T) {
	for _, c := range []string{"acme", "Café", "東京"} {
		if got := string(key(c)); got != c {
			t.Errorf("key(%q) = %q, want the customer's own bytes", c, got)
		}
	}
}

func TestActive(t *testing.T) {
	r := validRecord()
	if !r.Active(r.ExpiresAt.Add(-time.Nanosecond)) {
		t.Error("got inactive just before expiry, want active")
	}
	if r.Active(r.ExpiresAt) {
		t.Error("got active at expiry, want inactive")
	}
}
