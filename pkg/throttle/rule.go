package throttle

import "time"

// Rule is the part of a throttle that enforcing it needs: what Table.Lookup returns on
// the hot path of every event. The rest of the record (its id, why it was set, by whom)
// is one pointer further, which Lookup does not load.
type Rule struct {
	Limit  int64
	Window time.Duration
	Mode   Mode

	// Unix milliseconds, as on the wire: unlike nanoseconds, they hold every time the
	// schema's timestamp-millis can carry up to year 9999 without overflow.
	expires int64 // ExpiresAt, compared with the table's coarse clock
	created int64 // CreatedAt
	detail  *ruleDetail
}

// ruleDetail is the rest of a Record.
type ruleDetail struct {
	id     string
	reason Reason
	setBy  string
}

// Rule returns the record's enforcement view, as a Table's Lookup returns it.
func (r Record) Rule() Rule {
	return Rule{
		Limit: r.Limit, Window: r.Window, Mode: r.Mode,
		expires: r.ExpiresAt.UnixMilli(), created: r.CreatedAt.UnixMilli(),
		detail: &ruleDetail{id: r.ID, reason: r.Reason, setBy: r.SetBy},
	}
}

// ID is the throttle's id: a replacement of the customer's throttle has another.
func (r Rule) ID() string {
	if r.detail == nil {
		return ""
	}
	return r.detail.id
}

// ExpiresAt is when the throttle stops applying.
func (r Rule) ExpiresAt() time.Time { return time.UnixMilli(r.expires).UTC() }

// Active reports whether the throttle applies at now.
func (r Rule) Active(now time.Time) bool { return now.UnixMilli() < r.expires }

// Record returns the full record of the customer's rule (the zero Record for the zero
// Rule). Times come back in UTC, as the codec decodes them.
func (r Rule) Record(customer string) Record {
	if r.detail == nil {
		return Record{}
	}
	d := r.detail
	return Record{
		ID: d.id, Customer: customer, Limit: r.Limit, Window: r.Window, Mode: r.Mode,
		CreatedAt: time.UnixMilli(r.created).UTC(), ExpiresAt: r.ExpiresAt(),
		Reason: d.reason, SetBy: d.setBy,
	}
}
