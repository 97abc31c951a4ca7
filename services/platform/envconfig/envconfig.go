// Package envconfig holds the configuration every Sluice program shares — how to reach
// Kafka and the Schema Registry, the throttle topic, logging — read from environment
// variables, so the services and throttlectl spell each setting the same way.
//
// Each program declares one struct that embeds Connection and Log next to its own
// fields, with an env tag and a default on every field, and calls Load.
package envconfig

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
)

// Connection says where Kafka and the Schema Registry are and how to authenticate. The
// defaults reach the local stack (make run).
type Connection struct {
	Brokers []string `env:"KAFKA_BROKERS" envDefault:"127.0.0.1:9092" envSeparator:","`
	// TLS to the brokers; CA, certificate and key files are optional (system roots and no
	// client certificate when empty).
	TLSEnabled            bool   `env:"KAFKA_TLS_ENABLED" envDefault:"false"`
	TLSCAFile             string `env:"KAFKA_TLS_CA_FILE"`
	TLSCertFile           string `env:"KAFKA_TLS_CERT_FILE"`
	TLSKeyFile            string `env:"KAFKA_TLS_KEY_FILE"`
	TLSInsecureSkipVerify bool   `env:"KAFKA_TLS_INSECURE_SKIP_VERIFY" envDefault:"false"`
	// SASL: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty for none.
	SASLMechanism string `env:"KAFKA_SASL_MECHANISM"`
	SASLUsername  string `env:"KAFKA_SASL_USERNAME"`
	SASLPassword  string `env:"KAFKA_SASL_PASSWORD"`

	RegistryURL      string        `env:"SCHEMA_REGISTRY_URL" envDefault:"http://127.0.0.1:8081"`
	RegistryUsername string        `env:"SCHEMA_REGISTRY_USERNAME"`
	RegistryPassword string        `env:"SCHEMA_REGISTRY_PASSWORD"`
	RegistryTimeout  time.Duration `env:"SCHEMA_REGISTRY_TIMEOUT" envDefault:"5s"`

	// The compacted throttle topic and the settings EnsureTopic creates it with.
	ThrottleTopic      string `env:"THROTTLE_TOPIC" envDefault:"sluice.throttles"`
	ThrottlePartitions int    `env:"THROTTLE_TOPIC_PARTITIONS" envDefault:"6"`
	ReplicationFactor  int    `env:"TOPIC_REPLICATION_FACTOR" envDefault:"3"`
	MinInsyncReplicas  int    `env:"TOPIC_MIN_INSYNC_REPLICAS" envDefault:"2"`

	// MirrorHeartbeatTopic, when set, measures a second region's lag (services/platform/
	// mirror): the publishing region's processing writes heartbeats to it, MirrorMaker 2
	// copies it, and every ingestion replica reports the age of the newest per region.
	MirrorHeartbeatTopic string `env:"MIRROR_HEARTBEAT_TOPIC"`
}

// Kafka builds the client configuration, loading TLS material and the SASL mechanism.
func (c Connection) Kafka(clientID string) (cluster.Config, error) {
	kc := cluster.Config{Brokers: c.Brokers, ClientID: clientID}
	if c.TLSEnabled {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.TLSInsecureSkipVerify} //nolint:gosec // opt-in for test clusters
		if c.TLSCAFile != "" {
			pem, err := os.ReadFile(c.TLSCAFile)
			if err != nil {
				return kc, fmt.Errorf("read KAFKA_TLS_CA_FILE: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return kc, fmt.Errorf("KAFKA_TLS_CA_FILE %s: no PEM certificates", c.TLSCAFile)
			}
		}
		if c.TLSCertFile != "" || c.TLSKeyFile != "" {
			cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
			if err != nil {
				return kc, fmt.Errorf("load KAFKA_TLS_CERT_FILE/KAFKA_TLS_KEY_FILE: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		kc.TLS = tc
	}
	mech, err := cluster.SASLMechanism(c.SASLMechanism, c.SASLUsername, c.SASLPassword)
	if err != nil {
		return kc, fmt.Errorf("KAFKA_SASL_MECHANISM: %w", err)
	}
	kc.SASL = mech
	return kc, nil
}

// Registry returns the Schema Registry configuration.
func (c Connection) Registry() throttle.RegistryConfig {
	return throttle.RegistryConfig{URL: c.RegistryURL, Username: c.RegistryUsername, Password: c.RegistryPassword, Timeout: c.RegistryTimeout}
}

// TopicSpec returns the throttle topic's spec.
func (c Connection) TopicSpec() throttle.TopicSpec {
	return throttle.TopicSpec{
		Name: c.ThrottleTopic, Partitions: c.ThrottlePartitions,
		ReplicationFactor: c.ReplicationFactor, MinInsyncReplicas: c.MinInsyncReplicas,
	}
}

// Audit is where a service publishes its audit counts (package audit).
type Audit struct {
	// AuditEnabled turns the audit on (the default) or off.
	AuditEnabled bool `env:"AUDIT_ENABLED" envDefault:"true"`
	// AuditTopic is the compacted topic of every tier's counts. It is created when
	// missing.
	AuditTopic string `env:"AUDIT_TOPIC" envDefault:"sluice.audit"`
	// AuditInterval is how often a replica publishes its counts: a replica that dies
	// loses at most this much of them.
	AuditInterval time.Duration `env:"AUDIT_INTERVAL" envDefault:"5s"`
	// AuditBucket is the width of a bucket of ingestion time. Every service of a
	// pipeline must use the same.
	AuditBucket time.Duration `env:"AUDIT_BUCKET" envDefault:"1m"`
}

// Validate checks the audit settings that parse but cannot work.
func (a Audit) Validate() error {
	if a.AuditEnabled && (a.AuditTopic == "" || a.AuditInterval <= 0 || a.AuditBucket < time.Millisecond) {
		return fmt.Errorf("audit: AUDIT_TOPIC (%q) must be set, AUDIT_INTERVAL (%s) positive and AUDIT_BUCKET (%s) at least 1ms; AUDIT_ENABLED=false turns the audit off",
			a.AuditTopic, a.AuditInterval, a.AuditBucket)
	}
	return nil
}

// Log configures zap.
type Log struct {
	Format string `env:"LOG_FORMAT" envDefault:"json"` // json, or console for local use
	Level  string `env:"LOG_LEVEL" envDefault:"info"`  // debug, info, warn, error
}

// Logger builds the logger.
func (l Log) Logger() (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(l.Level)
	if err != nil {
		return nil, fmt.Errorf("LOG_LEVEL: %w", err)
	}
	var cfg zap.Config
	switch strings.ToLower(l.Format) {
	case "json", "":
		cfg = zap.NewProductionConfig()
	case "console":
		cfg = zap.NewDevelopmentConfig()
	default:
		return nil, fmt.Errorf("LOG_FORMAT %q: want json or console", l.Format)
	}
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.Sampling = nil // one line per event: operators grep for them
	return cfg.Build()
}

// Load fills cfg (a pointer to a struct with env tags) from the environment. Unknown
// SLUICE-looking variables are not an error; a malformed value is.
func Load(cfg any) error {
	if err := env.Parse(cfg); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	return nil
}

// Vars lists every environment variable that cfg (a pointer to a struct) reads, so
// deployment files can be checked against the configuration.
func Vars(cfg any) ([]string, error) {
	params, err := env.GetFieldParams(cfg)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(params))
	for _, p := range params {
		out = append(out, p.Key)
	}
	return out, nil
}
