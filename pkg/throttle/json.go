package throttle

import (
	"fmt"
	"math"
	"time"
)

// RecordJSON is the JSON shape of a throttle, the same in the processing admin API,
// ingestion's views and throttlectl's output and dump files, so scripts read them all the
// same way. It carries every field of the record: a dump can be restored from it.
type RecordJSON struct {
	ID        string     `json:"id"`
	Customer  string     `json:"customer"`
	Limit     int64      `json:"limit"`
	Window    string     `json:"window"`    // Go duration, e.g. "1m0s", for people
	WindowMS  int64      `json:"window_ms"` // the same in milliseconds, as on the wire
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt time.Time  `json:"expires_at"`
	Reason    ReasonJSON `json:"reason"`
	SetBy     string     `json:"set_by"`
	Mode      string     `json:"mode"` // enforce or shadow
}

// ReasonJSON is the JSON shape of a Reason.
type ReasonJSON struct {
	Kind   string  `json:"kind"` // manual or automatic
	Note   string  `json:"note"`
	Metric string  `json:"metric"`
	Value  float64 `json:"value"`
}

// NewRecordJSON is r in its JSON shape.
func NewRecordJSON(r Record) RecordJSON {
	v := r.Reason.Value
	if math.IsNaN(v) || math.IsInf(v, 0) {
		v = 0 // JSON has no spelling for them
	}
	return RecordJSON{
		ID: r.ID, Customer: r.Customer, Limit: r.Limit,
		Window: r.Window.String(), WindowMS: r.Window.Milliseconds(),
		CreatedAt: r.CreatedAt.UTC(), ExpiresAt: r.ExpiresAt.UTC(),
		Reason: ReasonJSON{Kind: r.Reason.Kind.String(), Note: r.Reason.Note, Metric: r.Reason.Metric, Value: v},
		SetBy:  r.SetBy, Mode: r.Mode.String(),
	}
}

// Record is the throttle j describes, validated. WindowMS is authoritative; Window is
// only for people.
func (j RecordJSON) Record() (Record, error) {
	var mode Mode
	if err := mode.UnmarshalText([]byte(j.Mode)); err != nil {
		return Record{}, err
	}
	var kind ReasonKind
	switch j.Reason.Kind {
	case "manual", "":
		kind = ReasonManual
	case "automatic":
		kind = ReasonAutomatic
	default:
		return Record{}, fmt.Errorf("reason kind %q: want manual or automatic", j.Reason.Kind)
	}
	window, err := windowOf(j.WindowMS)
	if err != nil {
		return Record{}, err
	}
	r := Record{
		ID: j.ID, Customer: j.Customer, Limit: j.Limit, Window: window,
		CreatedAt: j.CreatedAt.UTC(), ExpiresAt: j.ExpiresAt.UTC(),
		Reason: Reason{Kind: kind, Note: j.Reason.Note, Metric: j.Reason.Metric, Value: j.Reason.Value},
		SetBy:  j.SetBy, Mode: mode,
	}
	if err := r.Validate(); err != nil {
		return Record{}, err
	}
	return r, nil
}
