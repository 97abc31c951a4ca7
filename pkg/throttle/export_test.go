package throttle

// Names the tests need that are not the library's API.
const (
	MaxWindow            = maxWindow
	HeaderExpiresCreated = headerExpiresCreated
)

var (
	WindowOf           = windowOf
	ErrTombstone       = errTombstone
	WithClock          = withClock
	WithForgetInterval = withForgetInterval
	WithRetries        = withRetries
	WithBatchTimeout   = withBatchTimeout
	IsPoison           = isPoison
	ErrBadBody         = errBadBody
	ErrBadMagic        = errBadMagic
	ErrTruncated       = errTruncated
	ErrUnknownSchema   = errUnknownSchema
	ErrSchemaNotFound  = errSchemaNotFound
)

// Schema is the schema every Codec writes.
func Schema() string { return schemaV1 }
