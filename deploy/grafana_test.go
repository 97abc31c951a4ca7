package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

type panel struct {
	Type    string `json:"type"`
	Title   string `json:"title"`
	GridPos struct {
		X int `json:"x"`
		Y int `json:"y"`
	} `json:"gridPos"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

func dashboardPanels(t *testing.T) []panel {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("grafana", "sluice-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	// Grafana places a panel under the row above it.
	sort.SliceStable(d.Panels, func(i, j int) bool {
		a, b := d.Panels[i].GridPos, d.Panels[j].GridPos
		return a.Y < b.Y || a.Y == b.Y && a.X < b.X
	})
	return d.Panels
}

var metricName = regexp.MustCompile(`\bsluice_(ingestion|processing)_[a-z_]+`)

// TestDashboardRows: a panel sits under the row of the service whose metrics it shows
// (a row titled "Ingestion: ..." or "Processing: ..."; the overview may mix).
func TestDashboardRows(t *testing.T) {
	row, checked := "", 0
	for _, p := range dashboardPanels(t) {
		if p.Type == "row" {
			row = p.Title
			continue
		}
		service, _, ok := strings.Cut(row, ":")
		if !ok {
			continue
		}
		service = strings.ToLower(service)
		for _, tg := range p.Targets {
			for _, m := range metricName.FindAllStringSubmatch(tg.Expr, -1) {
				checked++
				if m[1] != service {
					t.Errorf("panel %q under row %q shows %s, a metric of %s", p.Title, row, m[0], m[1])
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no panel under a service's row")
	}
}

// TestDashboardRanges: rates and increases use Grafana's $__rate_interval (or $__range
// for a whole-range total), so that they follow the scrape interval and the zoom instead
// of a fixed window.
func TestDashboardRanges(t *testing.T) {
	fixed := regexp.MustCompile(`\[[0-9]+[smhdwy]\]`)
	n := 0
	for _, p := range dashboardPanels(t) {
		for _, tg := range p.Targets {
			n++
			if r := fixed.FindString(tg.Expr); r != "" {
				t.Errorf("panel %q: fixed range %s in %q: use $__rate_interval", p.Title, r, tg.Expr)
			}
		}
	}
	if n == 0 {
		t.Fatal("no query in the dashboard")
	}
}
