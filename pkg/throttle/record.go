package throttle

import (
	"fmt"
	"math"
	"time"
	"unicode"
	"unicode/utf8"
)

// MaxCustomerBytes is the longest customer id accepted, in bytes.
const MaxCustomerBytes = 256

// Mode says whether a throttle rejects events or only counts would-be rejections.
type Mode uint8

const (
	// ModeEnforce rejects a customer's events beyond the limit.
	ModeEnforce Mode = iota
	// ModeShadow counts the events that would be rejected without rejecting them: a way to
	// try a limit on live traffic.
	ModeShadow
)

// String is the mode as the Avro enum and the JSON views spell it.
func (m Mode) String() string {
	if m == ModeShadow {
		return "shadow"
	}
	return "enforce"
}

// UnmarshalText reads "enforce" or "shadow" (the JSON and flag spelling; upper case too).
// Empty text is ModeEnforce.
func (m *Mode) UnmarshalText(b []byte) error {
	switch string(b) {
	case "enforce", "ENFORCE", "":
		*m = ModeEnforce
	case "shadow", "SHADOW":
		*m = ModeShadow
	default:
		return fmt.Errorf("mode %q: want enforce or shadow", b)
	}
	return nil
}

// MarshalText writes the mode as UnmarshalText reads it.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// ReasonKind says who decided a throttle.
type ReasonKind uint8

const (
	// ReasonManual: an operator set the throttle.
	ReasonManual ReasonKind = iota
	// ReasonAutomatic: a processing service detected an overload.
	ReasonAutomatic
)

// String is the kind as the Avro enum and the JSON views spell it.
func (k ReasonKind) String() string {
	if k == ReasonAutomatic {
		return "automatic"
	}
	return "manual"
}

// Reason explains a throttle. Automatic throttles carry the measurement that triggered
// them (Metric, Value); manual ones carry the operator's note.
type Reason struct {
	Kind   ReasonKind
	Note   string
	Metric string  // empty for manual throttles
	Value  float64 // meaningful only when Metric is set
}

// Record is one customer's throttle: at most Limit events per Window, from CreatedAt until
// ExpiresAt. It is the value of the throttle topic, keyed by Customer.
type Record struct {
	ID        string
	Customer  string
	Limit     int64
	Window    time.Duration
	CreatedAt time.Time
	ExpiresAt time.Time
	Reason    Reason
	SetBy     string
	Mode      Mode
}

// ValidateCustomer checks a customer id.
//
// Two customer ids are the same key exactly when their bytes are equal: no case folding,
// no Unicode normalisation, no trimming. "Acme", "acme" and "Acme " are three customers,
// and so are the NFC and NFD spellings of "Café". Ingestion looks throttles up with the id
// exactly as the client sent it, so producers of events and of throttles must agree on one
// spelling.
func ValidateCustomer(c string) error {
	if c == "" {
		return fmt.Errorf("%w: customer is empty", ErrInvalid)
	}
	if len(c) > MaxCustomerBytes {
		return fmt.Errorf("%w: customer is %d bytes, at most %d allowed", ErrInvalid, len(c), MaxCustomerBytes)
	}
	if !utf8.ValidString(c) {
		return fmt.Errorf("%w: customer is not valid UTF-8", ErrInvalid)
	}
	for i, r := range c {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: customer has control character %U at byte %d", ErrInvalid, r, i)
		}
	}
	return nil
}

// maxWindow is the longest window a throttle can have: the longest time.Duration in whole
// milliseconds (about 292 years). The schema's window_ms can say more; such a record is
// invalid rather than read as some other window.
const maxWindow = time.Duration(math.MaxInt64 / int64(time.Millisecond) * int64(time.Millisecond))

// windowOf is the window of window_ms ms, or an ErrInvalid error when it is longer than
// maxWindow (a time.Duration would overflow into another window).
func windowOf(ms int64) (time.Duration, error) {
	if ms > int64(maxWindow/time.Millisecond) {
		return 0, fmt.Errorf("%w: window_ms %d is longer than the longest window enforced (%s)", ErrInvalid, ms, maxWindow)
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// Validate checks the rules every record on the topic must keep. Errors wrap ErrInvalid.
func (r *Record) Validate() error {
	if err := ValidateCustomer(r.Customer); err != nil {
		return err
	}
	if r.ID == "" {
		return fmt.Errorf("%w: customer %q: id is empty", ErrInvalid, r.Customer)
	}
	if r.Limit < 0 {
		return fmt.Errorf("%w: customer %q: limit %d is negative", ErrInvalid, r.Customer, r.Limit)
	}
	if r.Window <= 0 {
		return fmt.Errorf("%w: customer %q: window %s is not positive", ErrInvalid, r.Customer, r.Window)
	}
	if r.Window%time.Millisecond != 0 {
		return fmt.Errorf("%w: customer %q: window %s is not a whole number of milliseconds", ErrInvalid, r.Customer, r.Window)
	}
	if !r.ExpiresAt.After(r.CreatedAt) {
		return fmt.Errorf("%w: customer %q: expires at %s, not after created at %s",
			ErrInvalid, r.Customer, r.ExpiresAt.Format(time.RFC3339Nano), r.CreatedAt.Format(time.RFC3339Nano))
	}
	if r.Mode > ModeShadow {
		return fmt.Errorf("%w: customer %q: unknown mode %d", ErrInvalid, r.Customer, r.Mode)
	}
	if r.Reason.Kind > ReasonAutomatic {
		return fmt.Errorf("%w: customer %q: unknown reason kind %d", ErrInvalid, r.Customer, r.Reason.Kind)
	}
	return nil
}

// Active reports whether the throttle applies at now: it applies until ExpiresAt,
// exclusive.
func (r *Record) Active(now time.Time) bool { return now.Before(r.ExpiresAt) }

// key is the Kafka key of a customer's throttle: the customer id as plain UTF-8 bytes.
// Never Avro: a schema id in the key would split one customer into several keys.
func key(customer string) []byte { return []byte(customer) }
