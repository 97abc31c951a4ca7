package throttletest_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
)

const topic = "sluice.throttles"

// schemaV2 adds one optional field at the end of today's schema, as schemas/README.md
// allows.
func schemaV2(t *testing.T) string {
	v1 := throttleSchema(t)
	i := bytes.LastIndexByte([]byte(v1), ']')
	return v1[:i] + `,{"name":"region","type":["null","string"],"default":null}` + v1[i:]
}

func sample() throttle.Record {
	created := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	return throttle.Record{
		ID: "6f1c2a34-0000-4000-8000-000000000001", Customer: "acme", Limit: 20, Window: time.Minute,
		CreatedAt: created, ExpiresAt: created.Add(10 * time.Minute),
		Reason: throttle.Reason{Kind: throttle.ReasonManual, Note: "restart test"}, SetBy: "test",
		Mode: throttle.ModeEnforce,
	}
}

// TestStackKeepsSchemasAcrossRestart: a Stack with a DataDir keeps the registry's
// schemas in its broker. A schema registered after the first, and a record written
// with it, survive closing the Stack and starting a new one on the same data: the
// schema has the same id and version, and the record still decodes.
func TestStackKeepsSchemasAcrossRestart(t *testing.T) {
	throttletest.RequireKfake(t, "DataDir is kfake's")
	dir := t.TempDir()
	s1, err := throttletest.New(throttletest.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	codec := s1.Codec(t, topic)
	r := sample()
	v1, err := codec.Encode(&r) // registers today's schema
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := sr.NewClient(sr.URLs(s1.RegistryURL()))
	if err != nil {
		t.Fatal(err)
	}
	subject := (topic + "-value")
	v2, err := cl.CreateSchema(ctx, subject, sr.Schema{Schema: schemaV2(t), Type: sr.TypeAvro})
	if err != nil {
		t.Fatalf("register v2: %v", err)
	}
	// A v2 record: a v1 body, then the new field (union branch 1, "eu").
	rec := append([]byte{0, 0, 0, 0, 0}, v1[5:]...)
	binary.BigEndian.PutUint32(rec[1:], uint32(v2.ID))
	rec = append(rec, 2, 4, 'e', 'u')
	if _, err := codec.Decode(rec); err != nil {
		t.Fatalf("decode the v2 record before the restart: %v", err)
	}
	s1.Close()

	s2 := throttletest.Start(t, throttletest.Options{DataDir: dir})
	cl, err = sr.NewClient(sr.URLs(s2.RegistryURL()))
	if err != nil {
		t.Fatal(err)
	}
	got, err := cl.SchemaByVersion(ctx, subject, v2.Version)
	if err != nil {
		t.Fatalf("v2 after restart: %v", err)
	}
	if got.ID != v2.ID || got.Version != v2.Version {
		t.Errorf("v2 after restart: got id %d version %d, want id %d version %d", got.ID, got.Version, v2.ID, v2.Version)
	}
	reader := s2.Codec(t, topic) // a fresh codec: it asks the registry for every id
	for name, b := range map[string][]byte{"v1": v1, "v2": rec} {
		d, err := reader.Decode(b)
		if err != nil {
			t.Fatalf("decode the %s record after restart: %v", name, err)
		}
		if !reflect.DeepEqual(d, r) {
			t.Errorf("%s record after restart: got %+v, want %+v", name, d, r)
		}
	}
}

// TestStackRefusesIncompatibleSchema: the Stack's registry checks compatibility, as the
// real one does: a new required field without a default is refused under BACKWARD.
func TestStackRefusesIncompatibleSchema(t *testing.T) {
	s := throttletest.Start(t, throttletest.Options{})
	if _, err := s.Codec(t, topic).Register(); err != nil {
		t.Fatal(err)
	}
	cl, err := sr.NewClient(sr.URLs(s.RegistryURL()))
	if err != nil {
		t.Fatal(err)
	}
	v1 := throttleSchema(t)
	i := bytes.LastIndexByte([]byte(v1), ']')
	bad := v1[:i] + `,{"name":"region","type":"string"}` + v1[i:]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = cl.CreateSchema(ctx, (topic + "-value"), sr.Schema{Schema: bad, Type: sr.TypeAvro})
	var re *sr.ResponseError
	if !errors.As(err, &re) || re.StatusCode != 409 || re.ErrorCode != 409 {
		t.Fatalf("register a new required field: got %v, want a 409 with error_code 409", err)
	}
}

// throttleSchema is the schema the throttle codec writes: schemas/throttle.avsc.
func throttleSchema(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../../schemas/throttle.avsc")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
