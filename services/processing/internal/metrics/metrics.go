// Package metrics holds the processing service's Prometheus collectors. They live on a
// registry the service owns (not the global default), so tests build as many as they
// like and nothing is package-level state.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluice-dev/sluice/services/platform/audit"
)

// Label values of Throttles' action label.
const (
	ActionSet     = "set"
	ActionRenewed = "renewed"
	ActionLifted  = "lifted"
	ActionExpired = "expired"
)

// ReasonManual is the reason label of throttles set or lifted by an operator; automatic
// ones carry their metric (detect.MetricAge, detect.MetricShare).
const ReasonManual = "manual"

// Metrics is every collector of the service.
type Metrics struct {
	// Events counts consumed events by outcome: "handled" or "dead_lettered".
	Events *prometheus.CounterVec
	// EventAge is the age of each decodable event when processed (now - ingested_at).
	EventAge prometheus.Histogram
	// DeadLettered counts events sent to the dead-letter topic by stage: "decode" or
	// "handler".
	DeadLettered *prometheus.CounterVec
	// Throttles counts throttles by action (set, renewed, lifted, expired) and reason
	// (event_age_seconds, traffic_share, manual).
	Throttles *prometheus.CounterVec
	// PublishErrors counts failed throttle writes by action.
	PublishErrors *prometheus.CounterVec
	// ConsumerLag is, per partition of the events topic, how many records are behind the
	// last one processed (the high-water mark seen with it).
	ConsumerLag *prometheus.GaugeVec
	// CommitErrors counts failed offset commits (retried with the next commit).
	CommitErrors prometheus.Counter
	// Uncounted counts events the overload detector did not count: they came after the
	// window of their ingestion time was judged, or from a partition given away.
	Uncounted prometheus.Counter
}

// New creates the collectors and registers them on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_processing_events_total",
			Help: "Events consumed from the events topic, by outcome (handled, dead_lettered).",
		}, []string{"outcome"}),
		EventAge: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_processing_event_age_seconds",
			Help:    "Age of events when processed: processing time minus ingested_at.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 20), // 10ms to about 1.5h
		}),
		DeadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_processing_dead_lettered_total",
			Help: "Events written to the dead-letter topic, by stage (decode, handler).",
		}, []string{"stage"}),
		Throttles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_processing_throttles_total",
			Help: "Throttles by action (set, renewed, lifted, expired) and reason (event_age_seconds, traffic_share, manual).",
		}, []string{"action", "reason"}),
		PublishErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_processing_throttle_publish_errors_total",
			Help: "Throttle writes to the throttle topic that failed, by action.",
		}, []string{"action"}),
		ConsumerLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_processing_consumer_lag",
			Help: "Records behind the high-water mark on each partition of the events topic, as of the last record processed.",
		}, []string{"partition"}),
		CommitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_processing_commit_errors_total",
			Help: "Offset commits that failed; the offsets are committed again with the next commit.",
		}),
		Uncounted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_processing_detection_uncounted_total",
			Help: "Events processed but not counted by the overload detector: they arrived after the window of their ingestion time was judged, or from a partition given away in a rebalance.",
		}),
	}
	reg.MustRegister(m.Events, m.EventAge, m.DeadLettered, m.Throttles, m.PublishErrors, m.ConsumerLag, m.CommitErrors, m.Uncounted)
	// Series at zero from the start: a replica that never consumed a record must still
	// show a rate of 0, or SluiceProcessingStalled cannot fire for it.
	for _, outcome := range []string{"handled", "dead_lettered"} {
		m.Events.WithLabelValues(outcome)
	}
	return m
}

// Discard returns collectors registered nowhere, for callers that do not export metrics.
func Discard() *Metrics { return New(prometheus.NewRegistry()) }

// WatchAudit exports the reconciliation of the audit topic: the settled buckets that
// ended within window by status, and their events by kind. rows reconciles at now.
// publishErrors counts this replica's failed publishes of its own counts; skipped, the
// audit records that were no audit record.
func WatchAudit(reg prometheus.Registerer, rows func(now time.Time) []audit.Row, window time.Duration, publishErrors, skipped func() int64) {
	reg.MustRegister(&auditCollector{rows: rows, window: window, now: time.Now},
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sluice_processing_audit_publish_errors_total",
			Help: "Publishes of this replica's audit counts that failed; the offsets they cover stay uncommitted until one works.",
		}, func() float64 { return float64(publishErrors()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sluice_audit_skipped_records_total",
			Help: "Records of the audit topic that were no audit record: skipped, and logged with their partition and offset.",
		}, func() float64 { return float64(skipped()) }))
}

var (
	descAuditBuckets = prometheus.NewDesc("sluice_audit_buckets",
		"Buckets (partition and minute of ingestion time) that ended within AUDIT_WINDOW, by status: complete, short (events accepted and never processed), over (processed and never counted as accepted), open (within AUDIT_GRACE).",
		[]string{"status"}, nil)
	descAuditEvents = prometheus.NewDesc("sluice_audit_events",
		"Events of the settled buckets that ended within AUDIT_WINDOW, by kind: accepted by ingestion, forwarded and dead_lettered by processing (distinct offsets), duplicates (offsets processed again, and second copies of an event id), missing (accepted, never processed), over.",
		[]string{"kind"}, nil)
)

type auditCollector struct {
	rows   func(now time.Time) []audit.Row
	window time.Duration
	now    func() time.Time
}

func (c *auditCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descAuditBuckets
	ch <- descAuditEvents
}

func (c *auditCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.now()
	var recent, settled []audit.Row
	for _, r := range c.rows(now) {
		if now.Sub(r.End()) > c.window {
			continue
		}
		recent = append(recent, r)
		if r.Settled() {
			settled = append(settled, r)
		}
	}
	buckets := audit.Sum(recent).Buckets
	for _, s := range []string{audit.Complete, audit.Short, audit.Over, audit.Open} {
		ch <- prometheus.MustNewConstMetric(descAuditBuckets, prometheus.GaugeValue, float64(buckets[s]), s)
	}
	t := audit.Sum(settled)
	for kind, v := range map[string]int64{"accepted": t.Accepted, "forwarded": t.Forwarded, "dead_lettered": t.DeadLettered,
		"duplicates": t.Duplicates, "missing": t.Missing, "over": t.Extra} {
		ch <- prometheus.MustNewConstMetric(descAuditEvents, prometheus.GaugeValue, float64(v), kind)
	}
}
