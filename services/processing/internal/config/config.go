// Package config is the processing service's configuration: one struct read from
// environment variables, with a default on every field that works on the local stack
// (make run).
package config

import (
	"errors"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/services/platform/envconfig"
)

// Config is every setting of the processing service.
type Config struct {
	envconfig.Connection
	envconfig.Log

	// Topics. The service creates the three event topics when they are missing, with
	// EventsPartitions partitions and the Connection's replication settings; existing
	// topics are left as they are.
	EventsTopic      string `env:"EVENTS_TOPIC" envDefault:"events"`
	ProcessedTopic   string `env:"PROCESSED_TOPIC" envDefault:"events.processed"`
	DLQTopic         string `env:"DLQ_TOPIC" envDefault:"events.dlq"`
	EventsPartitions int    `env:"EVENTS_TOPIC_PARTITIONS" envDefault:"6"`
	ConsumerGroup    string `env:"CONSUMER_GROUP" envDefault:"sluice-processing"`
	// InstanceID names this replica in logs, in the SetBy of the throttles it publishes
	// and in dead-letter headers. Empty means the host name.
	InstanceID string `env:"INSTANCE_ID"`

	// Overload detection. Both rules look at the events of the last ShareWindow that this
	// replica consumed (its partitions, not the whole topic).
	//
	// Age rule: more than half of a customer's events are older than AgeThreshold when
	// processed, while more than half of the other customers' events are not. The
	// customer needs AgeMinEvents events in the window, and at least AgeMinShare of all
	// the old events, so that a bystander sharing a lagging partition with the flood is
	// not throttled with it.
	AgeThreshold time.Duration `env:"AGE_THRESHOLD" envDefault:"30s"`
	AgeMinEvents int           `env:"AGE_MIN_EVENTS" envDefault:"20"`
	AgeMinShare  float64       `env:"AGE_MIN_SHARE" envDefault:"0.25"`
	// Share rule: the customer sent more than ShareThreshold (0..1) of the window's
	// events, counted only once the window holds MinEvents events, so that a quiet
	// pipeline does not throttle its only customer.
	ShareThreshold float64       `env:"SHARE_THRESHOLD" envDefault:"0.5"`
	ShareWindow    time.Duration `env:"SHARE_WINDOW" envDefault:"1m"`
	MinEvents      int           `env:"MIN_EVENTS" envDefault:"100"`

	// The automatic throttle: at most ThrottleLimit events per ThrottleWindow for
	// ThrottleDuration, renewed while the overload lasts once it is within RenewMargin of
	// expiry. ThrottleMode "shadow" only counts would-be rejections (a safe rollout).
	ThrottleLimit    int64         `env:"THROTTLE_LIMIT" envDefault:"20"`
	ThrottleWindow   time.Duration `env:"THROTTLE_WINDOW" envDefault:"1m"`
	ThrottleDuration time.Duration `env:"THROTTLE_DURATION" envDefault:"10m"`
	ThrottleMode     string        `env:"THROTTLE_MODE" envDefault:"enforce"`
	RenewMargin      time.Duration `env:"RENEW_MARGIN" envDefault:"2m"`

	// Event handling: attempts after the first, the first backoff (doubled per attempt),
	// the time one attempt may take, and how often handled offsets are committed.
	HandlerRetries int           `env:"HANDLER_RETRIES" envDefault:"3"`
	HandlerBackoff time.Duration `env:"HANDLER_BACKOFF" envDefault:"100ms"`
	HandlerTimeout time.Duration `env:"HANDLER_TIMEOUT" envDefault:"10s"`
	CommitInterval time.Duration `env:"COMMIT_INTERVAL" envDefault:"1s"`

	// Admin API, health and metrics. Without ADMIN_TOKEN admin writes are refused,
	// unless ADMIN_ALLOW_NO_TOKEN is true (local use only).
	AdminAddr         string `env:"ADMIN_ADDR" envDefault:":8090"`
	AdminToken        string `env:"ADMIN_TOKEN"`
	AdminAllowNoToken bool   `env:"ADMIN_ALLOW_NO_TOKEN" envDefault:"false"`

	// ShutdownTimeout bounds the drain after SIGTERM: stop consuming, commit, flush.
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"20s"`
	// SweepGrace is how long after its expiry a throttle is tombstoned by the sweeper;
	// the grace lets a renewal that raced the expiry land first.
	SweepGrace time.Duration `env:"SWEEP_GRACE" envDefault:"30s"`

	// Region names this region in the mirror heartbeats it writes every second when
	// MIRROR_HEARTBEAT_TOPIC is set (required then).
	Region string `env:"REGION"`

	envconfig.Audit
	// AuditGrace is how long after a bucket's end its counts may still arrive (publishing
	// intervals, consumer lag); after it the bucket is settled: complete, short or over.
	AuditGrace time.Duration `env:"AUDIT_GRACE" envDefault:"2m"`
	// AuditWindow is how far back the sluice_audit_* metrics look: settled buckets that
	// ended within it.
	AuditWindow time.Duration `env:"AUDIT_WINDOW" envDefault:"1h"`
}

// Load reads the configuration from the environment, fills the defaults that depend on
// the host, and validates it.
func Load() (Config, error) {
	var c Config
	if err := envconfig.Load(&c); err != nil {
		return c, err
	}
	if c.InstanceID == "" {
		h, err := os.Hostname()
		if err != nil {
			return c, fmt.Errorf("configuration: INSTANCE_ID unset and host name unknown: %w", err)
		}
		c.InstanceID = h
	}
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}

// Validate checks the values that the environment parser cannot. Each error names the
// variable.
func (c Config) Validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
	}
	for name, v := range map[string]string{
		"EVENTS_TOPIC": c.EventsTopic, "PROCESSED_TOPIC": c.ProcessedTopic, "DLQ_TOPIC": c.DLQTopic,
		"CONSUMER_GROUP": c.ConsumerGroup, "THROTTLE_TOPIC": c.ThrottleTopic, "ADMIN_ADDR": c.AdminAddr,
	} {
		if v == "" {
			bad(name, "empty")
		}
	}
	if c.EventsTopic != "" && (c.EventsTopic == c.ProcessedTopic || c.EventsTopic == c.DLQTopic) {
		bad("EVENTS_TOPIC", "%q is also the processed or dead-letter topic", c.EventsTopic)
	}
	if c.MirrorHeartbeatTopic != "" && c.Region == "" {
		bad("REGION", "empty, but MIRROR_HEARTBEAT_TOPIC is set: name the region its heartbeats come from")
	}
	if err := c.Audit.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.AuditEnabled && (c.AuditGrace < 0 || c.AuditWindow <= 0) {
		bad("AUDIT_GRACE", "%s must not be negative, and AUDIT_WINDOW (%s) must be positive", c.AuditGrace, c.AuditWindow)
	}
	if c.EventsPartitions <= 0 {
		bad("EVENTS_TOPIC_PARTITIONS", "%d is not positive", c.EventsPartitions)
	}
	if len(c.InstanceID) > throttle.MaxCustomerBytes {
		bad("INSTANCE_ID", "longer than %d bytes", throttle.MaxCustomerBytes)
	}
	positive := map[string]time.Duration{
		"AGE_THRESHOLD": c.AgeThreshold, "SHARE_WINDOW": c.ShareWindow,
		"THROTTLE_WINDOW": c.ThrottleWindow, "THROTTLE_DURATION": c.ThrottleDuration,
		"HANDLER_BACKOFF": c.HandlerBackoff, "HANDLER_TIMEOUT": c.HandlerTimeout,
		"COMMIT_INTERVAL": c.CommitInterval, "SHUTDOWN_TIMEOUT": c.ShutdownTimeout,
	}
	for name, d := range positive {
		if d <= 0 {
			bad(name, "%s is not positive", d)
		}
	}
	if c.ThrottleWindow%time.Millisecond != 0 {
		bad("THROTTLE_WINDOW", "%s is not a whole number of milliseconds", c.ThrottleWindow)
	}
	if c.RenewMargin <= 0 || c.RenewMargin >= c.ThrottleDuration {
		bad("RENEW_MARGIN", "%s must be positive and shorter than THROTTLE_DURATION %s", c.RenewMargin, c.ThrottleDuration)
	}
	if c.SweepGrace < 0 {
		bad("SWEEP_GRACE", "%s is negative", c.SweepGrace)
	}
	// Written so that NaN fails too.
	if !(c.ShareThreshold > 0 && c.ShareThreshold <= 1) {
		bad("SHARE_THRESHOLD", "%g is not in (0, 1]", c.ShareThreshold)
	}
	if !(c.AgeMinShare >= 0 && c.AgeMinShare <= 1) {
		bad("AGE_MIN_SHARE", "%g is not in [0, 1]", c.AgeMinShare)
	}
	if c.MinEvents < 1 {
		bad("MIN_EVENTS", "%d is less than 1", c.MinEvents)
	}
	if c.AgeMinEvents < 1 {
		bad("AGE_MIN_EVENTS", "%d is less than 1", c.AgeMinEvents)
	}
	if c.ThrottleLimit < 0 {
		bad("THROTTLE_LIMIT", "%d is negative", c.ThrottleLimit)
	}
	var m throttle.Mode
	if err := m.UnmarshalText([]byte(c.ThrottleMode)); err != nil {
		bad("THROTTLE_MODE", "%v", err)
	}
	if c.HandlerRetries < 0 {
		bad("HANDLER_RETRIES", "%d is negative", c.HandlerRetries)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	return nil
}

// Mode is ThrottleMode parsed; Validate has checked it.
func (c Config) Mode() throttle.Mode {
	var m throttle.Mode
	_ = m.UnmarshalText([]byte(c.ThrottleMode))
	return m
}

// LogFields describes the configuration for the start-up log line, without secrets
// (ADMIN_TOKEN, SASL and registry passwords).
func (c Config) LogFields() []zap.Field {
	return []zap.Field{
		zap.Strings("brokers", c.Brokers),
		zap.Bool("kafka_tls", c.TLSEnabled),
		zap.String("kafka_sasl", c.SASLMechanism),
		zap.String("registry", c.RegistryURL),
		zap.String("throttle_topic", c.ThrottleTopic),
		zap.String("events_topic", c.EventsTopic),
		zap.String("processed_topic", c.ProcessedTopic),
		zap.String("dlq_topic", c.DLQTopic),
		zap.String("consumer_group", c.ConsumerGroup),
		zap.String("instance", c.InstanceID),
		zap.Duration("age_threshold", c.AgeThreshold),
		zap.Float64("share_threshold", c.ShareThreshold),
		zap.Duration("share_window", c.ShareWindow),
		zap.Int("min_events", c.MinEvents),
		zap.Int64("throttle_limit", c.ThrottleLimit),
		zap.Duration("throttle_window", c.ThrottleWindow),
		zap.Duration("throttle_duration", c.ThrottleDuration),
		zap.String("throttle_mode", c.ThrottleMode),
		zap.Duration("renew_margin", c.RenewMargin),
		zap.String("admin_addr", c.AdminAddr),
		zap.Bool("admin_token_set", c.AdminToken != ""),
	}
}
