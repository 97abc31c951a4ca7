package deploycheck

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestParsePromQL(t *testing.T) {
	tests := []struct {
		expr      string
		selectors []string // metric{label op value,...}
		grouping  []string
	}{
		{`up`, []string{"up"}, nil},
		{`sum by (result) (rate(a_total[$__rate_interval]))`, []string{"a_total"}, []string{"result"}},
		{`sum(rate(a_total{x="y",z=~"p|q"}[5m])) by (le) / on(instance) group_left b`, []string{`a_total{x="y",z=~"p|q"}`, "b"}, []string{"le", "instance"}},
		{`histogram_quantile(0.99, sum by (le) (rate(h_bucket[10m]))) > 5`, []string{"h_bucket"}, []string{"le"}},
		{`absent(m) or vector(0) and bool 1e3`, []string{"m"}, nil},
		{`label_replace(m, "dst", "$1", "src", "(.*)")`, []string{"m"}, nil},
		{`{__name__="m", a!="b"} offset 5m`, []string{`m{a!="b"}`}, nil},
		{`sum without (pod) (m) / ignoring (pod) n`, []string{"m", "n"}, []string{"pod", "pod"}},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			q, err := parsePromQL(tt.expr)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range q.Selectors {
				var ms []string
				for _, m := range s.Matchers {
					ms = append(ms, m.Label+m.Op+strconv.Quote(m.Value))
				}
				if len(ms) > 0 {
					got = append(got, s.Metric+"{"+strings.Join(ms, ",")+"}")
				} else {
					got = append(got, s.Metric)
				}
			}
			if !slices.Equal(got, tt.selectors) {
				t.Errorf("selectors: got %q, want %q", got, tt.selectors)
			}
			if !slices.Equal(q.Grouping, tt.grouping) {
				t.Errorf("grouping: got %q, want %q", q.Grouping, tt.grouping)
			}
		})
	}
	for _, bad := range []string{`m{a="b"`, `m{a~"b"}`, `rate(m[5m)`, `"open`, `m # comment`} {
		if _, err := parsePromQL(bad); err == nil {
			t.Errorf("parsePromQL(%q): got no error", bad)
		}
	}
}
