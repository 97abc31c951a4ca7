package throttle_test

import (
	"encoding/binary"
	"encoding/json"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
)

// evolve returns today's schema changed by edit, which works on the list of fields.
func evolve(t *testing.T, edit func(fields []map[string]any) []map[string]any) string {
	t.Helper()
	var s map[string]any
	if err := json.Unmarshal([]byte(throttle.Schema()), &s); err != nil {
		t.Fatal(err)
	}
	var fields []map[string]any
	for _, f := range s["fields"].([]any) {
		fields = append(fields, f.(map[string]any))
	}
	fields = edit(fields)
	list := make([]any, len(fields))
	for i, f := range fields {
		list[i] = f
	}
	s["fields"] = list
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func field(fields []map[string]any, name string) map[string]any {
	for _, f := range fields {
		if f["name"] == name {
			return f
		}
	}
	return nil
}

func without(fields []map[string]any, name string) []map[string]any {
	return slices.DeleteFunc(fields, func(f map[string]any) bool { return f["name"] == name })
}

// addSymbol appends sym to the enum of field name.
func addSymbol(fields []map[string]any, name, sym string) []map[string]any {
	enum := field(fields, name)["type"].(map[string]any)
	enum["symbols"] = append(enum["symbols"].([]any), sym)
	return fields
}

// Every change schemas/README.md allows, each with a record written with the evolved
// schema (registered, so it has a schema id of its own): today's codec decodes it as the
// README says, and a table enforces it.
func TestSchemaEvolution(t *testing.T) {
	s := throttletest.Start(t, throttletest.Options{})
	f := &fixture{t: t, s: s, topic: "evolution", codec: s.Codec(t, "evolution"), parts: 1}
	s.CreateTopic(t, f.topic, 1)
	if _, err := f.codec.Register(); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	tests := []struct {
		name   string
		edit   func([]map[string]any) []map[string]any
		extra  map[string]any // fields of the evolved record beyond today's
		drop   []string       // today's fields the evolved record no longer has
		kind   string         // reason_kind written
		mode   string         // mode written
		want   func(r *throttle.Record)
		limits int64
	}{
		{name: "new optional field (null-first union)",
			edit: func(fs []map[string]any) []map[string]any {
				return append(fs, map[string]any{"name": "region", "type": []any{"null", "string"}, "default": nil})
			},
			extra: map[string]any{"region": goavro.Union("string", "eu-west-1")}},
		{name: "new field of a plain type with a default",
			edit: func(fs []map[string]any) []map[string]any {
				return append(fs, map[string]any{"name": "priority", "type": "int", "default": 0})
			},
			extra: map[string]any{"priority": 7}},
		{name: "new record field with a default",
			edit: func(fs []map[string]any) []map[string]any {
				return append(fs, map[string]any{"name": "origin", "default": map[string]any{"host": ""},
					"type": map[string]any{"type": "record", "name": "Origin", "fields": []any{map[string]any{"name": "host", "type": "string"}}}})
			},
			extra: map[string]any{"origin": map[string]any{"host": "proc-3"}}},
		{name: "field with a default removed (reason_note)",
			edit: func(fs []map[string]any) []map[string]any { return without(fs, "reason_note") },
			drop: []string{"reason_note"},
			want: func(r *throttle.Record) { r.Reason.Note = "" }},
		{name: "field with a default removed (reason_metric, reason_value)",
			edit: func(fs []map[string]any) []map[string]any {
				return without(without(fs, "reason_metric"), "reason_value")
			},
			drop: []string{"reason_metric", "reason_value"},
			want: func(r *throttle.Record) { r.Reason.Metric, r.Reason.Value = "", 0 }},
		{name: "new symbol at the end of ReasonKind, used",
			edit: func(fs []map[string]any) []map[string]any { return addSymbol(fs, "reason_kind", "SCHEDULED") },
			kind: "SCHEDULED",
			// Unknown to this reader: the enum's default, MANUAL.
			want: func(r *throttle.Record) { r.Reason.Kind = throttle.ReasonManual }},
		{name: "new symbol at the end of ReasonKind, not used",
			edit: func(fs []map[string]any) []map[string]any { return addSymbol(fs, "reason_kind", "SCHEDULED") },
			kind: "AUTOMATIC"},
		{name: "new symbol at the end of Mode, used",
			edit: func(fs []map[string]any) []map[string]any { return addSymbol(fs, "mode", "AUDIT") },
			mode: "AUDIT",
			// Unknown to this reader: the enum's default, ENFORCE.
			want: func(r *throttle.Record) { r.Mode = throttle.ModeEnforce }},
		{name: "new symbol at the end of Mode, an old one used",
			edit: func(fs []map[string]any) []map[string]any { return addSymbol(fs, "mode", "AUDIT") },
			mode: "SHADOW",
			want: func(r *throttle.Record) { r.Mode = throttle.ModeShadow }},
		{name: "fields reordered (readers map by name)",
			edit: func(fs []map[string]any) []map[string]any { slices.Reverse(fs); return fs }},
		{name: "docs changed, aliases added",
			edit: func(fs []map[string]any) []map[string]any {
				field(fs, "limit")["doc"] = "another doc"
				field(fs, "set_by")["aliases"] = []any{"setter"}
				return fs
			}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			schema := evolve(t, tt.edit)
			id, _, err := s.Registry().RegisterSchema(f.topic+"-value", sr.Schema{Schema: schema, Type: sr.TypeAvro})
			if err != nil {
				t.Fatal(err)
			}
			avro, err := goavro.NewCodec(schema)
			if err != nil {
				t.Fatal(err)
			}
			r := throttle.Record{
				ID: "evo-" + strconv.Itoa(i), Customer: "evo-" + strconv.Itoa(i), Limit: int64(10 + i), Window: time.Minute,
				CreatedAt: now, ExpiresAt: now.Add(time.Hour), SetBy: "test",
				Reason: throttle.Reason{Kind: throttle.ReasonAutomatic, Note: "evolved", Metric: "traffic_share", Value: 0.75},
			}
			kind, mode := tt.kind, tt.mode
			if kind == "" {
				kind = "AUTOMATIC"
			}
			if mode == "" {
				mode = "ENFORCE"
			}
			native := map[string]any{
				"id": r.ID, "customer": r.Customer, "limit": r.Limit, "window_ms": r.Window.Milliseconds(),
				"created_at": r.CreatedAt, "expires_at": r.ExpiresAt, "reason_kind": kind,
				"reason_note": r.Reason.Note, "reason_metric": goavro.Union("string", r.Reason.Metric),
				"reason_value": goavro.Union("double", r.Reason.Value), "set_by": r.SetBy, "mode": mode,
			}
			for _, d := range tt.drop {
				delete(native, d)
			}
			for k, v := range tt.extra {
				native[k] = v
			}
			value := []byte{0, 0, 0, 0, 0}
			binary.BigEndian.PutUint32(value[1:], uint32(id))
			if value, err = avro.BinaryFromNative(value, native); err != nil {
				t.Fatal(err)
			}
			want := r
			if tt.want != nil {
				tt.want(&want)
			}
			got, err := f.codec.Decode(value)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if got != want {
				t.Fatalf("decode: got %+v, want %+v", got, want)
			}
			f.put(kafka.Message{Key: throttle.Key(r.Customer), Value: value})
			tb := f.run()
			rule, ok := tb.Lookup(r.Customer)
			if !ok || rule.Limit != want.Limit || rule.Window != want.Window || rule.Mode != want.Mode || rule.ID() != want.ID {
				t.Fatalf("table: got %+v (found %v), want the throttle enforced as %+v", rule, ok, want)
			}
			for why, n := range tb.Stats().Poison {
				if n != 0 {
					t.Fatalf("table counted %d poison (%s), want none", n, why)
				}
			}
		})
	}
}
