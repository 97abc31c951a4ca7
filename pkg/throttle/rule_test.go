package throttle_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

// The table stores a record as a Rule; Get must give every field back.
func TestRuleKeepsTheWholeRecord(t *testing.T) {
	created := time.UnixMilli(1_700_000_000_123).UTC()
	r := throttle.Record{
		ID: "th-1", Customer: "acme", Limit: 20, Window: time.Minute, Mode: throttle.ModeShadow,
		CreatedAt: created, ExpiresAt: created.Add(10 * time.Minute),
		Reason: throttle.Reason{Kind: throttle.ReasonAutomatic, Note: "flood", Metric: "traffic_share", Value: 0.9},
		SetBy:  "processing-0",
	}
	rule := r.Rule()
	if got := rule.Record("acme"); !reflect.DeepEqual(got, r) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, r)
	}
	if rule.ID() != r.ID || rule.Limit != 20 || rule.Window != time.Minute || rule.Mode != throttle.ModeShadow || !rule.ExpiresAt().Equal(r.ExpiresAt) {
		t.Fatalf("rule %+v does not match %+v", rule, r)
	}
	if !rule.Active(r.ExpiresAt.Add(-time.Nanosecond)) || rule.Active(r.ExpiresAt) {
		t.Fatal("a rule is active exactly before its expiry")
	}
	if got := (throttle.Rule{}).Record("x"); !reflect.DeepEqual(got, throttle.Record{}) {
		t.Fatalf("zero rule: got %+v, want the zero record", got)
	}
}
