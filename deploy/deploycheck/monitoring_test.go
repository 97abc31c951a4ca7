package deploycheck

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
)

// recordingTB records the errors CheckExprs reports instead of failing the test.
type recordingTB struct {
	testing.TB
	errs []string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// The audit's metrics (sluice_audit_*) are checked as processing's: processing's check
// resolves them and counts them used, ingestion's leaves them to processing, and a name
// of no service's namespace is still an error.
func TestCheckExprsSharedNamespace(t *testing.T) {
	services := []string{"processing", "ingestion"}
	processing := map[string]Metric{
		"sluice_processing_commit_errors_total": {Type: "counter", Labels: map[string]bool{}},
		"sluice_audit_buckets":                  {Type: "gauge", Labels: map[string]bool{"status": true}, Values: map[string][]string{"status": {"complete", "short", "over", "open"}}},
	}
	ingestion := map[string]Metric{
		"sluice_ingestion_audit_publish_errors_total": {Type: "counter", Labels: map[string]bool{}},
	}
	exprs := []Expr{
		{"a", `max(sluice_audit_buckets{status="short"}) > 0`},
		{"b", `max by (status) (sluice_audit_buckets)`},
		{"c", `sum(increase(sluice_ingestion_audit_publish_errors_total[10m])) > 0 and max(sluice_audit_buckets) > 0`},
	}
	for _, tc := range []struct {
		name    string
		prefix  string
		metrics map[string]Metric
		exprs   []Expr
		used    []string
		errs    []string // substrings, one per error
	}{
		{"processing", "sluice_processing_", processing, exprs, []string{"sluice_audit_buckets"}, nil},
		{"ingestion", "sluice_ingestion_", ingestion, exprs, []string{"sluice_ingestion_audit_publish_errors_total"}, nil},
		{"unknown status", "sluice_processing_", processing, []Expr{{"d", `max(sluice_audit_buckets{status="lost"})`}}, []string{"sluice_audit_buckets"}, []string{`never takes the value "lost"`}},
		{"unregistered", "sluice_processing_", processing, []Expr{{"e", `max(sluice_audit_events)`}}, nil, []string{"registers no such series"}},
		{"no service's", "sluice_processing_", processing, []Expr{{"f", `max(sluice_other_thing)`}}, nil, []string{"belongs to no service"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recordingTB{TB: t}
			used := CheckExprs(rec, tc.exprs, tc.prefix, tc.metrics, services)
			if got := slices.Sorted(maps.Keys(used)); !slices.Equal(got, tc.used) {
				t.Errorf("used %v, want %v", got, tc.used)
			}
			if len(rec.errs) != len(tc.errs) {
				t.Fatalf("errors %q, want %d matching %q", rec.errs, len(tc.errs), tc.errs)
			}
			for i, want := range tc.errs {
				if !strings.Contains(rec.errs[i], want) {
					t.Errorf("error %q does not say %q", rec.errs[i], want)
				}
			}
		})
	}
}
