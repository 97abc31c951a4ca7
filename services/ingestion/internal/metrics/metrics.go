// Package metrics holds the ingestion service's Prometheus metrics, on a registry of its
// own (no package-level state), served at /metrics.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

// Result is the outcome of one POST /v1/events that passed validation.
type Result uint8

const (
	// Accepted: written to Kafka (202).
	Accepted Result = iota
	// Rejected: over the customer's throttle (429).
	Rejected
	// ShadowRejected: over a shadow-mode throttle, so written anyway (202). Accepted plus
	// ShadowRejected is every 202.
	ShadowRejected
	// NotReady: refused because the throttle table has not caught up (503).
	NotReady
	// Overloaded: refused because the events could not be buffered or acknowledged in
	// time, or the replica is shutting down (503).
	Overloaded
	numResults
)

var resultNames = [numResults]string{"accepted", "rejected", "shadow_rejected", "not_ready", "overloaded"}

func (r Result) String() string { return resultNames[r] }

// Metrics are the service's metrics.
type Metrics struct {
	Registry *prometheus.Registry

	// Resolved once: a label lookup per request would hash strings on the hot path.
	requests    [numResults]prometheus.Counter
	events      [numResults]prometheus.Counter
	propagation prometheus.Histogram
	changes     *prometheus.CounterVec
}

// New registers the metrics, with the Go and process collectors, on a new registry.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_ingestion_decisions_total",
		Help: "Requests to POST /v1/events by result: accepted, rejected (429), shadow_rejected (over a shadow throttle, accepted), not_ready (503), overloaded (503).",
	}, []string{"result"})
	events := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_ingestion_decision_events_total",
		Help: "Events in requests to POST /v1/events by result (a request of N events counts N).",
	}, []string{"result"})
	m := &Metrics{
		Registry: reg,
		propagation: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_ingestion_throttle_propagation_seconds",
			Help:    "Time from a throttle record's Kafka timestamp to this replica applying it (records read while tailing, not while rebuilding).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_ingestion_throttle_changes_total",
			Help: "Changes applied to the throttle table, by kind (set, lifted, expired, stale_tombstone).",
		}, []string{"kind"}),
	}
	for r := range numResults {
		m.requests[r] = requests.WithLabelValues(r.String())
		m.events[r] = events.WithLabelValues(r.String())
	}
	reg.MustRegister(requests, events, m.propagation, m.changes)
	return m
}

// Decided counts one request of n events.
func (m *Metrics) Decided(r Result, n int) {
	m.requests[r].Inc()
	m.events[r].Add(float64(n))
}

// ThrottleChanged counts a change of the throttle table. age is the propagation delay;
// it is observed only for records read while tailing, since a rebuild replays old
// records whose age says nothing about propagation.
func (m *Metrics) ThrottleChanged(kind string, age time.Duration, rebuilding bool) {
	m.changes.WithLabelValues(kind).Inc()
	if !rebuilding && age > 0 {
		m.propagation.Observe(age.Seconds())
	}
}

// WatchTable exports the table's figures, read at each scrape.
func (m *Metrics) WatchTable(stats func() throttle.TableStats) {
	m.Registry.MustRegister(&tableCollector{stats: stats})
}

// WatchFleet exports the fleet size as this replica sees it (0 while unknown).
func (m *Metrics) WatchFleet(size func() (int, bool)) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_ingestion_fleet_size",
		Help: "Ingestion replicas alive as this replica sees them, itself included; 0 while unknown (then every limit is enforced in full).",
	}, func() float64 {
		n, known := size()
		if !known {
			return 0
		}
		return float64(n)
	}))
}

// WatchBuffer exports the events waiting for Kafka and the buffer's size.
func (m *Metrics) WatchBuffer(buffered func() int64, capacity int) {
	capGauge := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sluice_ingestion_buffer_capacity_events",
		Help: "Events the buffer holds at most; beyond it requests get 503.",
	})
	capGauge.Set(float64(capacity))
	m.Registry.MustRegister(capGauge, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_ingestion_buffered_events",
		Help: "Events held in memory waiting for Kafka's acknowledgement.",
	}, func() float64 { return float64(buffered()) }))
}

// WatchAudit exports how many publishes of the audit counts failed.
func (m *Metrics) WatchAudit(errors func() int64) {
	m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "sluice_ingestion_audit_publish_errors_total",
		Help: "Publishes of this replica's audit counts that failed; each is retried with the next interval.",
	}, func() float64 { return float64(errors()) }))
}

// WatchMirror exports, per region, the age of the newest mirror heartbeat (see
// services/platform/mirror): in a second region, how far the mirror lags.
func (m *Metrics) WatchMirror(age func(now time.Time) map[string]time.Duration) {
	m.Registry.MustRegister(mirrorCollector{age: age})
}

var descMirror = prometheus.NewDesc("sluice_ingestion_mirror_heartbeat_age_seconds",
	"Age of the newest mirror heartbeat of each region in this cluster's heartbeat topic: in a second region, the mirror's lag (it grows while the mirror or the first region is away).",
	[]string{"region"}, nil)

type mirrorCollector struct {
	age func(now time.Time) map[string]time.Duration
}

func (c mirrorCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descMirror }

func (c mirrorCollector) Collect(ch chan<- prometheus.Metric) {
	for region, age := range c.age(time.Now()) {
		ch <- prometheus.MustNewConstMetric(descMirror, prometheus.GaugeValue, age.Seconds(), region)
	}
}

// Handler serves the registry.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// tableCollector reads the table's Stats once per scrape.
type tableCollector struct {
	stats func() throttle.TableStats
}

var (
	descReady   = prometheus.NewDesc("sluice_ingestion_table_ready", "1 once the throttle table has caught up with the topic.", nil, nil)
	descFresh   = prometheus.NewDesc("sluice_ingestion_table_fresh", "1 while the broker answers the table's reader; 0 means serving the last known throttles.", nil, nil)
	descActive  = prometheus.NewDesc("sluice_ingestion_active_throttles", "Active throttles in this replica's table.", nil, nil)
	descLag     = prometheus.NewDesc("sluice_ingestion_table_lag_records", "Offsets between the table's position and the high watermark, per partition.", []string{"partition"}, nil)
	descPoison  = prometheus.NewDesc("sluice_ingestion_poison_records_total", "Throttle records skipped because they can never be decoded, by reason.", []string{"reason"}, nil)
	descWait    = prometheus.NewDesc("sluice_ingestion_table_waiting_offset", "Offset of the record a partition is held at because its schema cannot be fetched yet (registry away, or without the record's schema id); absent while nothing waits.", []string{"partition"}, nil)
	descSkip    = prometheus.NewDesc("sluice_ingestion_table_skipped_offsets_total", "Offsets retention or DeleteRecords removed below the log start before the table read them, per partition.", []string{"partition"}, nil)
	descMissing = prometheus.NewDesc("sluice_ingestion_schema_missing_total", "Attempts to decode a throttle record whose schema id the registry does not know (the record is held, not skipped).", nil, nil)
	tableDescs  = []*prometheus.Desc{descReady, descFresh, descActive, descLag, descPoison, descWait, descSkip, descMissing}
)

func boolToFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *tableCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range tableDescs {
		ch <- d
	}
}

func (c *tableCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, boolToFloat(s.Ready))
	ch <- prometheus.MustNewConstMetric(descFresh, prometheus.GaugeValue, boolToFloat(s.Fresh))
	ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(s.Active))
	for _, p := range s.Partitions {
		part := strconv.Itoa(p.Partition)
		ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, float64(p.Lag), part)
		ch <- prometheus.MustNewConstMetric(descSkip, prometheus.CounterValue, float64(p.SkippedOffsets), part)
		if p.Waiting >= 0 {
			ch <- prometheus.MustNewConstMetric(descWait, prometheus.GaugeValue, float64(p.Waiting), part)
		}
	}
	ch <- prometheus.MustNewConstMetric(descMissing, prometheus.CounterValue, float64(s.SchemaMissing))
	for reason, n := range s.Poison {
		ch <- prometheus.MustNewConstMetric(descPoison, prometheus.CounterValue, float64(n), reason)
	}
}
