package throttle

import (
	"errors"
	"fmt"

	"github.com/sluice-dev/sluice/pkg/throttle/follow"
)

// Errors returned by this package.
var (
	// ErrInvalid: a record breaks a rule of Record.Validate (one read from the topic is
	// then poison, skipped and counted as "invalid").
	ErrInvalid = errors.New("throttle: invalid record")
	// ErrRegistryUnavailable: the schema registry could not be reached to resolve a schema
	// id not seen before. It is retryable: the record is not poison (it wraps
	// follow.ErrRetry, so a follow.Scan retries it too).
	ErrRegistryUnavailable = fmt.Errorf("throttle: schema registry unavailable (%w)", follow.ErrRetry)
	// errSchemaNotFound: the registry answers that it does not know the record's schema
	// id. The record is held and retried, not skipped: the registry may lag the topic
	// (a second region's registry reads a mirrored _schemas on its own schedule), or
	// point at the wrong cluster, and skipping would drop every throttle silently. It
	// wraps follow.ErrRetry.
	errSchemaNotFound = fmt.Errorf("throttle: schema id not in the registry (%w)", follow.ErrRetry)
	// ErrNotCompacted: the throttle topic exists but its cleanup.policy is not compact,
	// so the broker would delete throttles by age.
	ErrNotCompacted = errors.New("throttle: topic is not compacted")
)

// The ways a value can be poison, besides ErrInvalid: PoisonReason names each, and a
// reader skips and counts them rather than retrying.
var (
	errBadMagic      = errors.New("throttle: wrong magic byte") // not the Confluent magic byte 0
	errTruncated     = errors.New("throttle: truncated header") // shorter than the 5-byte header
	errUnknownSchema = errors.New("throttle: unusable schema")  // the registry's answer is no Avro record schema
	errBadBody       = errors.New("throttle: body does not match its schema")
	// errTombstone: a nil value was handed to Decode. Tombstones carry no record; check
	// for nil before decoding.
	errTombstone = errors.New("throttle: tombstone has no value to decode")
)

// isPoison reports whether a decode error means the record can never be decoded, so a
// reader should skip it and count it, as opposed to retrying later.
func isPoison(err error) bool {
	return errors.Is(err, errBadMagic) || errors.Is(err, errTruncated) ||
		errors.Is(err, errUnknownSchema) || errors.Is(err, errBadBody) || errors.Is(err, ErrInvalid)
}

// PoisonReason names the kind of a poison record for counters and logs:
// "bad_magic", "truncated", "unknown_schema", "bad_body", "invalid", or "" when err is not
// a poison error.
func PoisonReason(err error) string {
	switch {
	case errors.Is(err, errBadMagic):
		return "bad_magic"
	case errors.Is(err, errTruncated):
		return "truncated"
	case errors.Is(err, errUnknownSchema):
		return "unknown_schema"
	case errors.Is(err, errBadBody):
		return "bad_body"
	case errors.Is(err, ErrInvalid):
		return "invalid"
	}
	return ""
}
