// Package config is the ingestion service's configuration: one struct read from the
// environment, with a default on every field that works on the local stack (make run).
package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/services/platform/envconfig"
)

// Config is everything the ingestion service reads from its environment.
type Config struct {
	envconfig.Connection
	envconfig.Log
	envconfig.Audit

	// HTTPAddr is where the API, /healthz, /readyz and /metrics are served.
	HTTPAddr string `env:"HTTP_ADDR" envDefault:":8080"`
	// ReplicaID names this replica in the membership topic. Empty means the host name,
	// which is the pod name on Kubernetes: unique, and the same after a restart in place.
	ReplicaID string `env:"REPLICA_ID"`

	// EventsTopic receives accepted events, keyed by customer. It is created (with the
	// delete cleanup policy) when missing, with EventsPartitions partitions.
	EventsTopic      string `env:"EVENTS_TOPIC" envDefault:"events"`
	EventsPartitions int    `env:"EVENTS_TOPIC_PARTITIONS" envDefault:"6"`

	// MembersTopic is the small compacted topic replicas heartbeat to, so each one knows
	// how many share a customer's limit.
	MembersTopic string `env:"MEMBERS_TOPIC" envDefault:"sluice.ingestion.members"`
	// HeartbeatInterval is how often this replica says it is alive.
	HeartbeatInterval time.Duration `env:"HEARTBEAT_INTERVAL" envDefault:"1s"`
	// MemberTTL is how long a heartbeat keeps a replica counted: three intervals, so one
	// lost or late heartbeat does not change every replica's share.
	MemberTTL time.Duration `env:"MEMBER_TTL" envDefault:"3s"`

	// MaxBodyBytes bounds a request body; larger bodies get 413.
	MaxBodyBytes int64 `env:"MAX_BODY_BYTES" envDefault:"1048576"`
	// MaxEventBytes bounds one encoded event (key and value), below the broker's
	// message.max.bytes (1 MiB by default), so that one event can never fail the batch
	// it shares with other requests' events.
	MaxEventBytes int `env:"MAX_EVENT_BYTES" envDefault:"1000000"`
	// BufferEvents bounds the events held in memory waiting for Kafka to acknowledge
	// them; beyond it requests get 503 (and keep their events).
	BufferEvents int `env:"BUFFER_EVENTS" envDefault:"100000"`
	// WriteTimeout is how long a request waits for Kafka to acknowledge its events
	// before it gets 503.
	WriteTimeout time.Duration `env:"WRITE_TIMEOUT" envDefault:"10s"`
	// BatchTimeout is how long the Kafka writer waits to fill a batch: a few milliseconds
	// trades a little latency for far fewer produce requests under load.
	BatchTimeout time.Duration `env:"BATCH_TIMEOUT" envDefault:"2ms"`

	// ShutdownTimeout bounds the graceful shutdown: drain requests, flush the writer,
	// leave the membership topic.
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"20s"`

	// APIKeys, when set, requires a key on /v1 requests and binds each key to one
	// customer: "key1:customerA,key2:customerB". Customers containing a comma cannot be
	// listed here.
	APIKeys string `env:"API_KEYS"`
}

// Load reads the configuration from the environment and checks it.
func Load() (Config, error) {
	var c Config
	if err := envconfig.Load(&c); err != nil {
		return c, err
	}
	if c.ReplicaID == "" {
		h, err := os.Hostname()
		if err != nil {
			return c, fmt.Errorf("REPLICA_ID is empty and the host name is unknown: %w", err)
		}
		c.ReplicaID = h
	}
	return c, c.Validate()
}

// Validate checks values that parse but cannot work.
func (c Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.ReplicaID != "", "REPLICA_ID is empty")
	check(c.EventsTopic != "", "EVENTS_TOPIC is empty")
	check(c.MembersTopic != "", "MEMBERS_TOPIC is empty")
	check(c.EventsPartitions > 0, "EVENTS_TOPIC_PARTITIONS %d: want > 0", c.EventsPartitions)
	check(c.HeartbeatInterval > 0, "HEARTBEAT_INTERVAL %s: want > 0", c.HeartbeatInterval)
	check(c.MemberTTL > c.HeartbeatInterval, "MEMBER_TTL %s: want more than HEARTBEAT_INTERVAL %s", c.MemberTTL, c.HeartbeatInterval)
	check(c.MaxBodyBytes > 0, "MAX_BODY_BYTES %d: want > 0", c.MaxBodyBytes)
	check(c.MaxEventBytes > 0, "MAX_EVENT_BYTES %d: want > 0", c.MaxEventBytes)
	check(c.BufferEvents > 0, "BUFFER_EVENTS %d: want > 0", c.BufferEvents)
	check(c.WriteTimeout > 0, "WRITE_TIMEOUT %s: want > 0", c.WriteTimeout)
	check(c.BatchTimeout > 0, "BATCH_TIMEOUT %s: want > 0", c.BatchTimeout)
	check(c.ShutdownTimeout > 0, "SHUTDOWN_TIMEOUT %s: want > 0", c.ShutdownTimeout)
	if err := c.Audit.Validate(); err != nil {
		errs = append(errs, err)
	}
	if _, err := c.Keys(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Keys parses APIKeys into key → customer. It returns nil when no keys are configured.
func (c Config) Keys() (map[string]string, error) {
	return ParseKeys(c.APIKeys)
}

// ParseKeys parses "key1:customerA,key2:customerB". The key ends at the first colon, so
// customers may contain colons; entries are separated by commas, so they may not contain
// commas. Surrounding spaces of an entry are ignored.
func ParseKeys(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	keys := map[string]string{}
	for i, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		key, customer, ok := strings.Cut(entry, ":")
		if !ok || key == "" {
			return nil, fmt.Errorf("API_KEYS entry %d: want key:customer", i+1)
		}
		if err := throttle.ValidateCustomer(customer); err != nil {
			return nil, fmt.Errorf("API_KEYS entry %d: %w", i+1, err)
		}
		if _, dup := keys[key]; dup {
			return nil, fmt.Errorf("API_KEYS entry %d: key listed twice", i+1)
		}
		keys[key] = customer
	}
	return keys, nil
}
