package throttle_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/follow"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
)

var update = flag.Bool("update", false, "rewrite golden files")

const topic = "sluice.throttles"

func sample() throttle.Record {
	created := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	return throttle.Record{
		ID:        "0b6d3c1e-8a4f-4d9e-9a51-6f1d2b7c4e10",
		Customer:  "acme",
		Limit:     20,
		Window:    time.Minute,
		CreatedAt: created,
		ExpiresAt: created.Add(10 * time.Minute),
		Reason:    throttle.Reason{Kind: throttle.ReasonAutomatic, Note: "events 312s old while p50 is 2s", Metric: "event_age_seconds", Value: 312.5},
		SetBy:     "processing-7f9c",
		Mode:      throttle.ModeEnforce,
	}
}

func TestEmbeddedSchemaIsSource(t *testing.T) {
	src, err := os.ReadFile("../../schemas/throttle.avsc")
	if err != nil {
		t.Fatalf("read schemas/throttle.avsc: %v", err)
	}
	if string(src) != throttle.Schema() {
		t.Fatal("pkg/throttle/throttle.avsc differs from schemas/throttle.avsc: run go generate ./... in pkg/throttle")
	}
}

func TestRoundTrip(t *testing.T) {
	s := throttletest.Start(t, throttletest.Options{})
	c := s.Codec(t, topic)
	manual := sample()
	manual.Reason = throttle.Reason{Kind: throttle.ReasonManual, Note: "operator: runaway batch job"}
	manual.Mode = throttle.ModeShadow
	manual.Customer = "Café 東京"
	zero := sample()
	zero.Limit = 0
	for name, in := range map[string]throttle.Record{"automatic": sample(), "manual shadow": manual, "limit zero": zero} {
		t.Run(name, func(t *testing.T) {
			b, err := c.Encode(&in)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			out, err := c.Decode(b)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(out, in) {
				t.Fatalf("got %+v, want %+v", out, in)
			}
		})
	}
}

func TestGoldenBytes(t *testing.T) {
	s := throttletest.Start(t, throttletest.Options{})
	c := s.Codec(t, topic)
	r := sample()
	b, err := c.Encode(&r)
	if err != nil {
		t.Fatal(err)
	}
	// The registry's first id is 1 on a fresh srfake; the golden file pins the header too.
	if *update {
		if err := os.WriteFile("testdata/golden-v1.bin", b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile("testdata/golden-v1.bin")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, want) {
		t.Fatalf("wire format changed:\n got %x\nwant %x", b, want)
	}
	if b[0] != 0 || binary.BigEndian.Uint32(b[1:5]) != 1 {
		t.Fatalf("got header %x, want 00 00000001", b[:5])
	}
	got, err := c.Decode(want)
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("decode golden: got %+v, %v; want %+v", got, err, r)
	}
}

func TestSubjectCompatibilityIsBackward(t *testing.T) {
	s := throttletest.Start(t, throttletest.Options{})
	c := s.Codec(t, topic)
	if _, err := c.Register(); err != nil {
		t.Fatal(err)
	}
	cl, err := sr.NewClient(sr.URLs(s.RegistryURL()))
	if err != nil {
		t.Fatal(err)
	}
	res := cl.Compatibility(t.Context(), topic+"-value")
	if len(res) != 1 || res[0].Err != nil || res[0].Level != sr.CompatBackward {
		t.Fatalf("got %+v, want BACKWARD", res)
	}
}

func TestDecodeErrors(t *testing.T) {
	s := throttletest.Start(t, throttletest.Options{})
	c := s.Codec(t, topic)
	r := sample()
	good, err := c.Encode(&r)
	if err != nil {
		t.Fatal(err)
	}
	withID := func(id uint32, body []byte) []byte {
		b := []byte{0, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[1:], id)
		return append(b, body...)
	}
	// A record that decodes but breaks validation: encode by hand with an empty customer.
	avro, _ := goavro.NewCodec(throttle.Schema())
	bad := map[string]any{
		"id": "x", "customer": "", "limit": int64(1), "window_ms": int64(1000),
		"created_at": time.UnixMilli(1000), "expires_at": time.UnixMilli(2000),
		"reason_kind": "MANUAL", "reason_note": "", "reason_metric": nil, "reason_value": nil,
		"set_by": "op", "mode": "ENFORCE",
	}
	invalidBody, err := avro.BinaryFromNative(nil, bad)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		value []byte
		want  error
	}{
		{"empty", []byte{}, throttle.ErrTruncated},
		{"short header", []byte{0, 0, 1}, throttle.ErrTruncated},
		{"wrong magic", append([]byte{1}, good[1:]...), throttle.ErrBadMagic},
		{"json not avro", []byte(`{"customer":"acme"}`), throttle.ErrBadMagic},
		{"not a record schema", withID(uint32(registerSchema(t, s, "other-value", `"string"`)), []byte{2, 'x'}), throttle.ErrUnknownSchema},
		{"truncated body", good[:len(good)-3], throttle.ErrBadBody},
		{"trailing bytes", append(append([]byte{}, good...), 1, 2), throttle.ErrBadBody},
		{"garbage body", withID(1, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}), throttle.ErrBadBody},
		{"invalid record", withID(1, invalidBody), throttle.ErrInvalid},
		{"tombstone", nil, throttle.ErrTombstone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Decode(tt.value)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if tt.want != throttle.ErrTombstone && !throttle.IsPoison(err) {
				t.Fatalf("got IsPoison false for %v, want true", err)
			}
			if errors.Is(err, throttle.ErrRegistryUnavailable) {
				t.Fatalf("got retryable %v, want a poison error", err)
			}
		})
	}
}

// TestDecodeUnknownSchemaIDIsRetried: an id the registry does not know is not poison.
// The registry may lag the topic (a second region's, reading a mirrored _schemas), and
// skipping would drop the throttle for good; the error says to retry.
func TestDecodeUnknownSchemaIDIsRetried(t *testing.T) {
	s := throttletest.Start(t, throttletest.Options{})
	c := s.Codec(t, topic)
	r := sample()
	good, err := c.Encode(&r)
	if err != nil {
		t.Fatal(err)
	}
	next := binary.BigEndian.Uint32(good[1:5]) + 1
	value := append([]byte{0, 0, 0, 0, 0}, good[5:]...)
	binary.BigEndian.PutUint32(value[1:5], next)
	_, err = c.Decode(value)
	if !errors.Is(err, throttle.ErrSchemaNotFound) || !errors.Is(err, follow.ErrRetry) || throttle.IsPoison(err) {
		t.Fatalf("unknown id %d: got %v (poison %v), want a retryable schema-not-found error", next, err, throttle.IsPoison(err))
	}
	// Once the registry has the id, the same bytes decode: nothing was cached from the 404.
	// As a second region's registry gets the id its first region's registry gave.
	s.Registry().SeedSchema("mirror-value", 1, int(next), sr.Schema{Schema: throttle.Schema(), Type: sr.TypeAvro})
	got, err := c.Decode(value)
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("after registration: got %+v, %v; want %+v", got, err, r)
	}
}

// registerSchema registers an Avro schema under subject and returns its id.
func registerSchema(t *testing.T, s *throttletest.Stack, subject, schema string) int {
	t.Helper()
	cl, err := sr.NewClient(sr.URLs(s.RegistryURL()))
	if err != nil {
		t.Fatal(err)
	}
	ss, err := cl.CreateSchema(t.Context(), subject, sr.Schema{Schema: schema, Type: sr.TypeAvro})
	if err != nil {
		t.Fatalf("register %s: %v", subject, err)
	}
	return ss.ID
}

// v2 adds one optional field; records written with it must decode with today's code.
const schemaV2Extra = `{"name":"region","type":["null","string"],"default":null,"doc":"v2 test field"}`

func schemaV2(t *testing.T) string {
	v1 := throttle.Schema()
	i := bytes.LastIndexByte([]byte(v1), ']')
	return v1[:i] + "," + schemaV2Extra + v1[i:]
}

func TestDecodeNewerSchema(t *testing.T) {
	s := throttletest.Start(t, throttletest.Options{})
	c := s.Codec(t, topic)
	if _, err := c.Register(); err != nil {
		t.Fatal(err)
	}
	v2 := schemaV2(t)
	id, _, err := s.Registry().RegisterSchema(topic+"-value", sr.Schema{Schema: v2, Type: sr.TypeAvro})
	if err != nil {
		t.Fatal(err)
	}
	avro, err := goavro.NewCodec(v2)
	if err != nil {
		t.Fatal(err)
	}
	r := sample()
	native := map[string]any{
		"id": r.ID, "customer": r.Customer, "limit": r.Limit, "window_ms": r.Window.Milliseconds(),
		"created_at": r.CreatedAt, "expires_at": r.ExpiresAt, "reason_kind": "AUTOMATIC",
		"reason_note": r.Reason.Note, "reason_metric": goavro.Union("string", r.Reason.Metric),
		"reason_value": goavro.Union("double", r.Reason.Value), "set_by": r.SetBy, "mode": "ENFORCE",
		"region": goavro.Union("string", "eu-west-1"),
	}
	b := []byte{0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(id))
	b, err = avro.BinaryFromNative(b, native)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Decode(b)
	if err != nil {
		t.Fatalf("decode v2 record with v1 code: %v", err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Fatalf("got %+v, want %+v", got, r)
	}
}

func TestDecodeWhileRegistryDown(t *testing.T) {
	s := throttletest.Start(t, throttletest.Options{})
	writer := s.Codec(t, topic)
	r := sample()
	v1, err := writer.Encode(&r)
	if err != nil {
		t.Fatal(err)
	}
	id2, _, err := s.Registry().RegisterSchema(topic+"-value", sr.Schema{Schema: schemaV2(t), Type: sr.TypeAvro})
	if err != nil {
		t.Fatal(err)
	}
	v2 := append([]byte{0, 0, 0, 0, 0}, v1[5:]...) // a v1 body is a valid v2 prefix, but it never gets decoded
	binary.BigEndian.PutUint32(v2[1:], uint32(id2))

	reader := s.Codec(t, topic) // a fresh reader: caches nothing yet
	if _, err := reader.Decode(v1); err != nil {
		t.Fatalf("first decode: %v", err)
	}
	s.StopRegistry()
	if got, err := reader.Decode(v1); err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("decode of a seen id with registry down: got %v, want the record", err)
	}
	_, err = reader.Decode(v2)
	if !errors.Is(err, throttle.ErrRegistryUnavailable) {
		t.Fatalf("decode of a new id with registry down: got %v, want ErrRegistryUnavailable", err)
	}
	if throttle.IsPoison(err) {
		t.Fatalf("got poison for %v, want retryable", err)
	}
	if err := s.StartRegistry(); err != nil {
		t.Fatal(err)
	}
	if _, err := reader.Decode(v2); errors.Is(err, throttle.ErrRegistryUnavailable) {
		t.Fatalf("after the registry returned: got %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	s := throttletest.Start(f, throttletest.Options{})
	c := s.Codec(f, topic)
	r := sample()
	good, err := c.Encode(&r)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) >= 5 && b[0] == 0 {
			// Keep the fuzzer on the known schema id so it explores the Avro body rather
			// than making one registry round trip per input.
			binary.BigEndian.PutUint32(b[1:5], 1)
		}
		rec, err := c.Decode(b)
		if err != nil {
			if !throttle.IsPoison(err) {
				t.Fatalf("got non-poison error %v for fuzzed bytes", err)
			}
			return
		}
		if verr := rec.Validate(); verr != nil {
			t.Fatalf("decoded an invalid record: %v", verr)
		}
		again, err := c.Encode(&rec)
		if err != nil {
			t.Fatalf("re-encode decoded record: %v", err)
		}
		back, err := c.Decode(again)
		if err != nil || !reflect.DeepEqual(back, rec) {
			t.Fatalf("round trip of decoded record: got %+v, %v; want %+v", back, err, rec)
		}
	})
}
