package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A replica that has consumed nothing exports its event counters at zero: the alert on a
// stalled consumer needs a rate of 0, not a missing series.
func TestEventSeriesExistBeforeTheFirstEvent(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(reg)
	want := `
# HELP sluice_processing_events_total Events consumed from the events topic, by outcome (handled, dead_lettered).
# TYPE sluice_processing_events_total counter
sluice_processing_events_total{outcome="dead_lettered"} 0
sluice_processing_events_total{outcome="handled"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "sluice_processing_events_total"); err != nil {
		t.Fatal(err)
	}
}
