package throttle_test

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
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
			f.put(kafka.Message{Key: []byte(r.Customer), Value: value})
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

// The extremes of the schema's numeric fields: a window_ms longer than a time.Duration
// holds is invalid poison (not another window), a limit up to the largest long and
// timestamps up to year 9999 are read and enforced as written.
func TestRecordExtremes(t *testing.T) {
	s := throttletest.Start(t, throttletest.Options{})
	codec := s.Codec(t, topic)
	id, err := codec.Register()
	if err != nil {
		t.Fatal(err)
	}
	avro, err := goavro.NewCodec(throttle.Schema())
	if err != nil {
		t.Fatal(err)
	}
	encode := func(limit, windowMS int64, created, expires time.Time) []byte {
		native := map[string]any{
			"id": "x", "customer": "acme", "limit": limit, "window_ms": windowMS,
			"created_at": created, "expires_at": expires, "reason_kind": "MANUAL",
			"reason_note": "", "reason_metric": nil, "reason_value": nil, "set_by": "t", "mode": "ENFORCE",
		}
		b := []byte{0, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[1:], uint32(id))
		b, err := avro.BinaryFromNative(b, native)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	year9999 := time.Date(9999, 12, 31, 23, 59, 59, 999e6, time.UTC)
	for _, windowMS := range []int64{math.MaxInt64, math.MaxInt64 / 1_000_000 * 10, int64(throttle.MaxWindow/time.Millisecond) + 1} {
		_, err := codec.Decode(encode(1, windowMS, now, now.Add(time.Hour)))
		if !errors.Is(err, throttle.ErrInvalid) || throttle.PoisonReason(err) != "invalid" {
			t.Errorf("window_ms %d: got %v (%s), want invalid poison", windowMS, err, throttle.PoisonReason(err))
		}
	}
	r, err := codec.Decode(encode(math.MaxInt64, int64(throttle.MaxWindow/time.Millisecond), now, year9999))
	if err != nil {
		t.Fatalf("largest limit and window, expiry in 9999: %v", err)
	}
	if r.Limit != math.MaxInt64 || r.Window != throttle.MaxWindow || !r.ExpiresAt.Equal(year9999) {
		t.Fatalf("got %+v, want the record as written", r)
	}
	// A Rule keeps the expiry as written, and the throttle is active until then.
	rule := r.Rule()
	if !rule.ExpiresAt().Equal(year9999) || !rule.Active(now) || !rule.Active(time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("rule: expires %v, active now %v: want %v and active", rule.ExpiresAt(), rule.Active(now), year9999)
	}
	if got := rule.Record("acme"); !got.ExpiresAt.Equal(year9999) {
		t.Fatalf("rule's record: expires %v, want %v", got.ExpiresAt, year9999)
	}
}

// FuzzRecordToRule: any record the codec reads becomes a rule that enforces it as
// written: the same limit, window, mode and expiry (to the millisecond, as on the wire),
// and active exactly when the record is, at any time up to year 9999.
func FuzzRecordToRule(f *testing.F) {
	f.Add(int64(20), int64(60000), int64(0), int64(3600000), int64(1000), false)
	f.Add(int64(math.MaxInt64), int64(throttle.MaxWindow/time.Millisecond), int64(-62135596800000), int64(253402300799999), int64(253402300799998), true)
	f.Add(int64(0), int64(1), int64(1e15), int64(1e15+1), int64(1e15), false)
	f.Fuzz(func(t *testing.T, limit, windowMS, createdMS, expiresMS, nowMS int64, shadow bool) {
		const minMS, maxMS = -62135596800000, 253402300799999 // years 1 to 9999
		if createdMS < minMS || createdMS > maxMS || expiresMS < minMS || expiresMS > maxMS || nowMS < minMS || nowMS > maxMS {
			return
		}
		r := throttle.Record{ID: "x", Customer: "acme", Limit: limit, SetBy: "t",
			CreatedAt: time.UnixMilli(createdMS).UTC(), ExpiresAt: time.UnixMilli(expiresMS).UTC()}
		w, err := throttle.WindowOf(windowMS)
		if err != nil {
			return
		}
		r.Window = w
		if shadow {
			r.Mode = throttle.ModeShadow
		}
		if r.Validate() != nil {
			return
		}
		rule := r.Rule()
		now := time.UnixMilli(nowMS)
		if rule.Limit != r.Limit || rule.Window != r.Window || rule.Mode != r.Mode || !rule.ExpiresAt().Equal(r.ExpiresAt) {
			t.Fatalf("rule %+v expires %v, want the record %+v", rule, rule.ExpiresAt(), r)
		}
		if rule.Active(now) != r.Active(now) {
			t.Fatalf("at %v: rule active %v, record active %v (expires %v)", now, rule.Active(now), r.Active(now), r.ExpiresAt)
		}
		if back := rule.Record(r.Customer); back != r {
			t.Fatalf("rule's record %+v, want %+v", back, r)
		}
	})
}
