// Package throttlejson is the JSON shape of a throttle, the same in the processing admin
// API, ingestion's views and throttlectl's output and dump files, so that scripts read
// them all the same way.
package throttlejson

import (
	"fmt"
	"math"
	"time"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

// Record is the JSON shape of a throttle.Record. It carries every field of the record: a
// dump can be restored from it.
type Record struct {
	ID        string    `json:"id"`
	Customer  string    `json:"customer"`
	Limit     int64     `json:"limit"`
	Window    string    `json:"window"`    // Go duration, e.g. "1m0s", for people
	WindowMS  int64     `json:"window_ms"` // the same in milliseconds, as on the wire
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Reason    Reason    `json:"reason"`
	SetBy     string    `json:"set_by"`
	Mode      string    `json:"mode"` // enforce or shadow
}

// Reason is the JSON shape of a throttle.Reason.
type Reason struct {
	Kind   string  `json:"kind"` // manual or automatic
	Note   string  `json:"note"`
	Metric string  `json:"metric"`
	Value  float64 `json:"value"`
}

// From is r in its JSON shape.
func From(r throttle.Record) Record {
	v := r.Reason.Value
	if math.IsNaN(v) || math.IsInf(v, 0) {
		v = 0 // JSON has no spelling for them
	}
	return Record{
		ID: r.ID, Customer: r.Customer, Limit: r.Limit,
		Window: r.Window.String(), WindowMS: r.Window.Milliseconds(),
		CreatedAt: r.CreatedAt.UTC(), ExpiresAt: r.ExpiresAt.UTC(),
		Reason: Reason{Kind: r.Reason.Kind.String(), Note: r.Reason.Note, Metric: r.Reason.Metric, Value: v},
		SetBy:  r.SetBy, Mode: r.Mode.String(),
	}
}

// Record is the throttle j describes, validated. WindowMS is authoritative; Window is
// only for people.
func (j Record) Record() (throttle.Record, error) {
	var mode throttle.Mode
	if err := mode.UnmarshalText([]byte(j.Mode)); err != nil {
		return throttle.Record{}, err
	}
	var kind throttle.ReasonKind
	switch j.Reason.Kind {
	case "manual", "":
		kind = throttle.ReasonManual
	case "automatic":
		kind = throttle.ReasonAutomatic
	default:
		return throttle.Record{}, fmt.Errorf("reason kind %q: want manual or automatic", j.Reason.Kind)
	}
	// A window in milliseconds that a Duration cannot hold: Validate would not see it.
	if j.WindowMS > math.MaxInt64/int64(time.Millisecond) {
		return throttle.Record{}, fmt.Errorf("%w: window_ms %d is longer than the longest window enforced", throttle.ErrInvalid, j.WindowMS)
	}
	window := time.Duration(j.WindowMS) * time.Millisecond
	r := throttle.Record{
		ID: j.ID, Customer: j.Customer, Limit: j.Limit, Window: window,
		CreatedAt: j.CreatedAt.UTC(), ExpiresAt: j.ExpiresAt.UTC(),
		Reason: throttle.Reason{Kind: kind, Note: j.Reason.Note, Metric: j.Reason.Metric, Value: j.Reason.Value},
		SetBy:  j.SetBy, Mode: mode,
	}
	if err := r.Validate(); err != nil {
		return throttle.Record{}, err
	}
	return r, nil
}
