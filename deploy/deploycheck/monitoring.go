package deploycheck

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Expr is an expression of a deployment file, with where it is.
type Expr struct {
	Where string
	Expr  string
}

// DashboardExprs returns every query of the Grafana dashboard, rows' panels included.
func DashboardExprs(t testing.TB, root string) []Expr {
	t.Helper()
	path := filepath.Join(root, "deploy", "grafana", "sluice-dashboard.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string            `json:"title"`
		UID    string            `json:"uid"`
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	if dash.Title == "" || dash.UID == "" {
		t.Fatalf("%s: got title %q uid %q, want both set", path, dash.Title, dash.UID)
	}
	var out []Expr
	var walk func([]json.RawMessage)
	walk = func(panels []json.RawMessage) {
		for _, raw := range panels {
			var p struct {
				Title   string            `json:"title"`
				Type    string            `json:"type"`
				Panels  []json.RawMessage `json:"panels"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			}
			if err := json.Unmarshal(raw, &p); err != nil {
				t.Fatalf("%s: panel: %v", path, err)
			}
			for _, tg := range p.Targets {
				out = append(out, Expr{Where: "dashboard panel " + strconv.Quote(p.Title), Expr: tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	return out
}

// AlertRule is a rule of deploy/prometheus/alerts.yaml.
type AlertRule struct {
	Group string
	Def   map[string]any
}

// AlertRules returns the rules of deploy/prometheus/alerts.yaml, in file order.
func AlertRules(t testing.TB, root string) []AlertRule {
	t.Helper()
	docs := YAMLDocs(t, filepath.Join(root, "deploy", "prometheus", "alerts.yaml"))
	if len(docs) != 1 {
		t.Fatalf("alerts.yaml: got %d documents, want 1", len(docs))
	}
	var out []AlertRule
	for _, g := range AtList(docs[0], "groups") {
		for _, r := range AtList(g, "rules") {
			out = append(out, AlertRule{Group: AtString(g, "name"), Def: r.(map[string]any)})
		}
	}
	return out
}

// AlertExprs is the expression of every rule of deploy/prometheus/alerts.yaml.
func AlertExprs(t testing.TB, root string) []Expr {
	t.Helper()
	var out []Expr
	for _, r := range AlertRules(t, root) {
		name := AtString(r.Def, "alert") + AtString(r.Def, "record")
		out = append(out, Expr{Where: "alert rule " + name, Expr: AtString(r.Def, "expr")})
	}
	return out
}

// Metric describes a metric family a service registers.
type Metric struct {
	Type   string          // counter, gauge, histogram, summary
	Labels map[string]bool // its variable labels
	// Values lists, per label, the values the label takes, when the test knows them all.
	Values map[string][]string
}

// sharedMetrics maps a namespace of metric names that is no service's own (sluice_<x>_)
// to the service that exports it: the reconciliation of the audit topic
// (sluice_audit_*) is the processing service's, though it concerns every tier.
var sharedMetrics = map[string]string{"sluice_audit_": "processing"}

// metricService is the service of services that exports metric: the one whose
// sluice_<service>_ prefix it has, or the exporter of its shared namespace; "" if none.
func metricService(metric string, services []string) string {
	for _, s := range services {
		if strings.HasPrefix(metric, "sluice_"+s+"_") {
			return s
		}
	}
	for ns, s := range sharedMetrics {
		if strings.HasPrefix(metric, ns) && slices.Contains(services, s) {
			return s
		}
	}
	return ""
}

// targetLabels are the labels Prometheus adds to every scraped series.
var targetLabels = map[string]bool{"job": true, "instance": true, "namespace": true, "pod": true, "container": true, "service": true, "endpoint": true}

// CheckExprs checks every selector of exprs whose metric name starts with prefix against
// the service's metrics: the name exists (a histogram's through _bucket, _sum, _count),
// each matcher's label is one of its labels, and each value one it takes when known.
// Grouping labels must be labels of a selector of the same expression. It returns the
// metrics used, so that the caller can check coverage. Names of the sluice_ namespace
// that belong to none of services are errors too; expressions that mix in another
// service's series are checked for this service's selectors only. A name of a shared
// namespace (sharedMetrics, such as sluice_audit_) is checked as its exporter's.
func CheckExprs(t testing.TB, exprs []Expr, prefix string, metrics map[string]Metric, services []string) map[string]bool {
	t.Helper()
	own := metricService(prefix, services) // the service whose metrics these are
	used := map[string]bool{}
	for _, e := range exprs {
		q, err := parsePromQL(e.Expr)
		if err != nil {
			t.Errorf("%s: %v", e.Where, err)
			continue
		}
		if len(q.Selectors) == 0 {
			t.Errorf("%s: %q selects no series", e.Where, e.Expr)
		}
		labels := maps.Clone(targetLabels)
		others := false // the expression has series of another service, whose labels this test does not know
		for _, sel := range q.Selectors {
			svc := metricService(sel.Metric, services)
			if svc == "" {
				t.Errorf("%s: metric %q belongs to no service (want a sluice_<%s>_ name, or one of %v)", e.Where, sel.Metric, strings.Join(services, "|"), slices.Sorted(maps.Keys(sharedMetrics)))
				continue
			}
			if !strings.HasPrefix(sel.Metric, prefix) && (own == "" || svc != own) {
				others = true
				continue
			}
			name, info, extra := resolveMetric(sel.Metric, metrics)
			if name == "" {
				t.Errorf("%s: metric %s: the service registers no such series (a histogram is queried through _bucket, _sum and _count)", e.Where, sel.Metric)
				continue
			}
			used[name] = true
			for l := range info.Labels {
				labels[l] = true
			}
			if extra != "" {
				labels[extra] = true
			}
			for _, m := range sel.Matchers {
				if !info.Labels[m.Label] && !targetLabels[m.Label] && m.Label != extra {
					t.Errorf("%s: metric %s has no label %q", e.Where, name, m.Label)
					continue
				}
				want := info.Values[m.Label]
				if len(want) == 0 || (m.Op != "=" && m.Op != "=~") {
					continue
				}
				values := []string{m.Value}
				if m.Op == "=~" {
					if strings.ContainsAny(m.Value, `.*+?()[]{}\^$`) {
						continue // a real regular expression: cannot enumerate it
					}
					values = strings.Split(m.Value, "|")
				}
				for _, v := range values {
					if !slices.Contains(want, v) {
						t.Errorf("%s: metric %s label %s never takes the value %q (it takes %v)", e.Where, name, m.Label, v, want)
					}
				}
			}
		}
		for _, g := range q.Grouping {
			if !others && !labels[g] {
				t.Errorf("%s: grouping label %q is on no series of %q", e.Where, g, e.Expr)
			}
		}
	}
	return used
}

// resolveMetric maps a series name to its family: itself, or a histogram's or summary's
// _bucket, _sum or _count series. extra is the label the series adds (le, quantile).
func resolveMetric(series string, metrics map[string]Metric) (family string, info Metric, extra string) {
	if info, ok := metrics[series]; ok {
		if info.Type == "histogram" || info.Type == "summary" {
			if info.Type == "summary" {
				return series, info, "quantile"
			}
			return "", info, "" // a histogram has no series of its bare name
		}
		return series, info, ""
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(series, suffix)
		if !ok {
			continue
		}
		info, ok := metrics[base]
		switch {
		case !ok:
		case info.Type == "histogram" && suffix == "_bucket":
			return base, info, "le"
		case (info.Type == "histogram" || info.Type == "summary") && suffix != "_bucket":
			return base, info, ""
		}
	}
	return "", Metric{}, ""
}

// GitHubAnchor is the anchor GitHub gives a Markdown heading.
func GitHubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		}
	}
	return b.String()
}
