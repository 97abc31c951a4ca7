package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/sluice-dev/sluice/deploy/deploycheck"
)

// TestAlertRules runs promtool over the alert rules: check rules, then their unit tests
// (prometheus/alerts_test.yaml), and checks those tests cover every alert: each fires in
// at least one test, and stays silent in the healthy-fleet test. Without promtool it
// skips, unless SLUICE_REQUIRE_PROMTOOL=1 (CI sets it; Debian's prometheus package has
// promtool).
func TestAlertRules(t *testing.T) {
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	var tests struct {
		Tests []struct {
			Name      string `yaml:"name"`
			RuleTests []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	remarshal(t, deploycheck.YAMLDocs(t, filepath.Join("prometheus", "alerts.yaml"))[0], &rules)
	remarshal(t, deploycheck.YAMLDocs(t, filepath.Join("prometheus", "alerts_test.yaml"))[0], &tests)
	fires, silentWhenHealthy := map[string]bool{}, map[string]bool{}
	for i, tc := range tests.Tests {
		for _, rt := range tc.RuleTests {
			if len(rt.ExpAlerts) > 0 {
				fires[rt.Alertname] = true
			}
			if i == 0 && len(rt.ExpAlerts) == 0 {
				silentWhenHealthy[rt.Alertname] = true
			}
		}
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			if !fires[r.Alert] {
				t.Errorf("alert %s: no test in prometheus/alerts_test.yaml where it fires", r.Alert)
			}
			if !silentWhenHealthy[r.Alert] {
				t.Errorf("alert %s: not checked silent in the healthy-fleet test (the first of alerts_test.yaml)", r.Alert)
			}
		}
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("SLUICE_REQUIRE_PROMTOOL") == "1" {
			t.Fatal("SLUICE_REQUIRE_PROMTOOL=1 but promtool is not installed (apt-get install prometheus)")
		}
		t.Skip("promtool is not installed (apt-get install prometheus); SLUICE_REQUIRE_PROMTOOL=1 makes this a failure")
	}
	for _, args := range [][]string{{"check", "rules", "alerts.yaml"}, {"test", "rules", "alerts_test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "prometheus"
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
			continue
		}
		t.Logf("promtool %v:\n%s", args, out)
	}
	t.Logf("%d alerts, each firing in a test and silent on a healthy fleet", n)
}
