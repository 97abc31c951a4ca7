package throttle

import (
	"errors"
	"fmt"

	"github.com/sluice-dev/sluice/pkg/throttle/follow"
)

// Errors returned by this package. Decode errors wrap one of the first five, so callers
// can tell a poison record (skip it) from a registry that is away (retry later).
var (
	// ErrBadMagic: the value does not start with the Confluent magic byte 0.
	ErrBadMagic = errors.New("throttle: wrong magic byte")
	// ErrTruncated: the value is shorter than the 5-byte Confluent header.
	ErrTruncated = errors.New("throttle: truncated header")
	// ErrUnknownSchema: the registry answered that the record's schema id does not exist,
	// or the schema it holds under that id is not a throttle schema.
	ErrUnknownSchema = errors.New("throttle: unknown schema id")
	// ErrBadBody: the Avro body does not match the schema named by its id.
	ErrBadBody = errors.New("throttle: body does not match its schema")
	// ErrInvalid: the record decoded but breaks a rule of Record.Validate.
	ErrInvalid = errors.New("throttle: invalid record")

	// ErrRegistryUnavailable: the schema registry could not be reached to resolve a schema
	// id not seen before. It is retryable: the record is not poison (it wraps follow.ErrRetry,
	// so a follow.Scan retries it too).
	ErrRegistryUnavailable = fmt.Errorf("throttle: schema registry unavailable (%w)", follow.ErrRetry)
	// errTombstone: a nil value was handed to Decode. Tombstones carry no record; check
	// for nil before decoding.
	errTombstone = errors.New("throttle: tombstone has no value to decode")
	// ErrNotCompacted: the throttle topic exists but its cleanup.policy is not compact,
	// so the broker would delete throttles by age.
	ErrNotCompacted = errors.New("throttle: topic is not compacted")
)

// isPoison reports whether a decode error means the record can never be decoded, so a
// reader should skip it and count it, as opposed to retrying later.
func isPoison(err error) bool {
	return errors.Is(err, ErrBadMagic) || errors.Is(err, ErrTruncated) ||
		errors.Is(err, ErrUnknownSchema) || errors.Is(err, ErrBadBody) || errors.Is(err, ErrInvalid)
}

// PoisonReason names the kind of a poison record for counters and logs:
// "bad_magic", "truncated", "unknown_schema", "bad_body", "invalid", or "" when err is not
// a poison error.
func PoisonReason(err error) string {
	switch {
	case errors.Is(err, ErrBadMagic):
		return "bad_magic"
	case errors.Is(err, ErrTruncated):
		return "truncated"
	case errors.Is(err, ErrUnknownSchema):
		return "unknown_schema"
	case errors.Is(err, ErrBadBody):
		return "bad_body"
	case errors.Is(err, ErrInvalid):
		return "invalid"
	}
	return ""
}
