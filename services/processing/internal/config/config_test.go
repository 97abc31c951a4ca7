package config

import (
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/services/platform/envconfig"
)

func TestLoadDefaultsWorkLocally(t *testing.T) {
	t.Setenv("INSTANCE_ID", "")
	c, err := Load()
	if err != nil {
		t.Fatalf("load with defaults: %v", err)
	}
	host, _ := os.Hostname()
	tests := []struct {
		name      string
		got, want any
	}{
		{"EVENTS_TOPIC", c.EventsTopic, "events"},
		{"PROCESSED_TOPIC", c.ProcessedTopic, "events.processed"},
		{"DLQ_TOPIC", c.DLQTopic, "events.dlq"},
		{"CONSUMER_GROUP", c.ConsumerGroup, "sluice-processing"},
		{"INSTANCE_ID", c.InstanceID, host},
		{"THROTTLE_LIMIT", c.ThrottleLimit, int64(20)},
		{"THROTTLE_WINDOW", c.ThrottleWindow, time.Minute},
		{"THROTTLE_DURATION", c.ThrottleDuration, 10 * time.Minute},
		{"ADMIN_ADDR", c.AdminAddr, ":8090"},
		{"ADMIN_ALLOW_NO_TOKEN", c.AdminAllowNoToken, false},
		{"THROTTLE_TOPIC", c.ThrottleTopic, "sluice.throttles"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestLoadReadsTheEnvironment(t *testing.T) {
	t.Setenv("INSTANCE_ID", "proc-3")
	t.Setenv("SHARE_THRESHOLD", "0.3")
	t.Setenv("THROTTLE_DURATION", "15m")
	t.Setenv("ADMIN_TOKEN", "tok")
	t.Setenv("KAFKA_BROKERS", "a:9092,b:9092")
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.InstanceID != "proc-3" || c.ShareThreshold != 0.3 || c.ThrottleDuration != 15*time.Minute ||
		c.AdminToken != "tok" || !slices.Equal(c.Brokers, []string{"a:9092", "b:9092"}) {
		t.Errorf("got %+v, want the values set in the environment", c)
	}
	for _, f := range c.LogFields() {
		if strings.Contains(f.String, "tok") {
			t.Errorf("log field %s: got %q, want no secret in the start-up line", f.Key, f.String)
		}
	}
}

func TestLoadRejects(t *testing.T) {
	tests := []struct {
		env, value string
	}{
		{"SHARE_THRESHOLD", "1.5"},
		{"SHARE_THRESHOLD", "0"},
		{"AGE_THRESHOLD", "0s"},
		{"AGE_MIN_SHARE", "-0.1"},
		{"MIN_EVENTS", "0"},
		{"THROTTLE_LIMIT", "-1"},
		{"THROTTLE_WINDOW", "1500us"},
		{"THROTTLE_MODE", "loud"},
		{"RENEW_MARGIN", "10m"}, // not shorter than THROTTLE_DURATION
		{"HANDLER_RETRIES", "-1"},
		{"EVENTS_TOPIC", "events.dlq"},
		{"EVENTS_TOPIC_PARTITIONS", "0"},
		{"SHUTDOWN_TIMEOUT", "0s"},
	}
	for _, tt := range tests {
		t.Run(tt.env+"="+tt.value, func(t *testing.T) {
			t.Setenv("INSTANCE_ID", "x")
			t.Setenv(tt.env, tt.value)
			_, err := Load()
			if err == nil || !strings.Contains(err.Error(), tt.env) {
				t.Errorf("got error %v, want one naming %s", err, tt.env)
			}
		})
	}
}

// Mirror heartbeats need the name of the region they come from.
func TestLoadRejectsHeartbeatsWithoutRegion(t *testing.T) {
	t.Setenv("INSTANCE_ID", "x")
	t.Setenv("MIRROR_HEARTBEAT_TOPIC", "sluice.mirror.heartbeat")
	if _, err := Load(); err == nil || !strings.Contains(err.Error(), "REGION") {
		t.Errorf("got error %v, want one naming REGION", err)
	}
	t.Setenv("REGION", "eu-west")
	if _, err := Load(); err != nil {
		t.Errorf("with REGION: %v", err)
	}
}

// A value that does not parse is refused by envconfig.Load, which names the field (the
// parser does not know the variable's name).
func TestLoadRejectsUnparsable(t *testing.T) {
	t.Setenv("AGE_THRESHOLD", "soon")
	if _, err := Load(); err == nil || !strings.Contains(err.Error(), "AgeThreshold") {
		t.Errorf("got error %v, want one naming AgeThreshold", err)
	}
}

// Every setting the service documents is read from the environment, and every field
// has a default except those that must not have one.
func TestEveryFieldIsAnEnvironmentVariableWithADefault(t *testing.T) {
	vars, err := envconfig.Vars(&Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"KAFKA_BROKERS", "SCHEMA_REGISTRY_URL", "THROTTLE_TOPIC", "LOG_LEVEL",
		"EVENTS_TOPIC", "PROCESSED_TOPIC", "DLQ_TOPIC", "CONSUMER_GROUP", "INSTANCE_ID",
		"AGE_THRESHOLD", "SHARE_THRESHOLD", "SHARE_WINDOW", "MIN_EVENTS",
		"THROTTLE_LIMIT", "THROTTLE_WINDOW", "THROTTLE_DURATION", "RENEW_MARGIN", "HANDLER_RETRIES",
		"ADMIN_ADDR", "ADMIN_TOKEN", "ADMIN_ALLOW_NO_TOKEN", "SHUTDOWN_TIMEOUT", "SWEEP_GRACE",
	} {
		if !slices.Contains(vars, want) {
			t.Errorf("got no %s among %v", want, vars)
		}
	}
	noDefault := map[string]bool{"INSTANCE_ID": true, "ADMIN_TOKEN": true, "REGION": true} // host name; secret; only with MIRROR_HEARTBEAT_TOPIC
	typ := reflect.TypeFor[Config]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		if f.Anonymous {
			continue
		}
		env := f.Tag.Get("env")
		if env == "" {
			t.Errorf("field %s: got no env tag, want one", f.Name)
			continue
		}
		if _, ok := f.Tag.Lookup("envDefault"); !ok && !noDefault[env] {
			t.Errorf("field %s (%s): got no default, want one that works locally", f.Name, env)
		}
	}
}
