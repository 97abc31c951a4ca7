// Package fastavro decodes the throttle schema's v1 body without goavro: the hot path of
// a table's rebuild from offset zero.
//
// Why it exists: goavro decodes into a map[string]any (many allocations a record), which
// made a rebuild several times slower than reading the topic (BenchmarkRebuildRatio in
// pkg/throttle, with and without this path). goavro stays the reference and handles
// every other schema; FuzzDecodeV1MatchesGoavro checks that this path accepts and
// rejects exactly what goavro does and yields the same fields.
package fastavro

import (
	"encoding/binary"
	"errors"
	"math"
)

// V1 is a v1 throttle body's fields, as written.
type V1 struct {
	ID, Customer                                      string
	Limit, WindowMillis, CreatedMillis, ExpiresMillis int64
	Automatic                                         bool // reason.kind: AUTOMATIC, else MANUAL
	Note                                              string
	Metric                                            string // "" for null
	Value                                             float64
	SetBy                                             string
	Shadow                                            bool // mode: SHADOW, else ENFORCE
}

// DecodeV1 decodes an Avro body written with exactly the v1 schema. checkWindow judges
// window_ms as soon as it is read; its error, like a decoding error, ends the decode
// and is returned (the first of them wins).
func DecodeV1(b []byte, checkWindow func(ms int64) error) (V1, error) {
	d := reader{buf: b}
	var r V1
	r.ID = d.str()
	r.Customer = d.str()
	r.Limit = d.long()
	r.WindowMillis = d.long()
	if d.err == nil {
		d.err = checkWindow(r.WindowMillis)
	}
	r.CreatedMillis = d.long()
	r.ExpiresMillis = d.long()
	r.Automatic = d.enum(2) == 0
	r.Note = d.str()
	if d.enum(2) == 1 { // union [null, string]
		r.Metric = d.str()
	}
	if d.enum(2) == 1 { // union [null, double]
		r.Value = d.double()
	}
	r.SetBy = d.str()
	r.Shadow = d.enum(2) == 1
	if d.err != nil {
		return V1{}, d.err
	}
	if len(d.buf) != 0 {
		return V1{}, errTrailing
	}
	return r, nil
}

var (
	errShort    = errors.New("avro: short buffer")
	errNegative = errors.New("avro: negative length")
	errIndex    = errors.New("avro: enum or union index out of range")
	errTrailing = errors.New("avro: trailing bytes")
)

// reader reads Avro binary primitives; after the first error every read returns
// zero and the error sticks.
type reader struct {
	buf []byte
	err error
}

// long reads a zig-zag varint exactly as goavro does (no limit on its length).
func (d *reader) long() int64 {
	if d.err != nil {
		return 0
	}
	var v uint64
	var shift uint
	for i, c := range d.buf {
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			d.buf = d.buf[i+1:]
			return int64(v>>1) ^ -int64(v&1)
		}
		shift += 7
	}
	d.err = errShort
	return 0
}

func (d *reader) str() string {
	n := d.long()
	switch {
	case d.err != nil:
		return ""
	case n < 0:
		d.err = errNegative
		return ""
	case n > int64(len(d.buf)):
		d.err = errShort
		return ""
	}
	s := string(d.buf[:n])
	d.buf = d.buf[n:]
	return s
}

func (d *reader) enum(symbols int64) int64 {
	i := d.long()
	if d.err == nil && (i < 0 || i >= symbols) {
		d.err = errIndex
	}
	return i
}

func (d *reader) double() float64 {
	if d.err != nil {
		return 0
	}
	if len(d.buf) < 8 {
		d.err = errShort
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(d.buf))
	d.buf = d.buf[8:]
	return v
}
