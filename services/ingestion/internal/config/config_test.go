package config

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultsAreValid(t *testing.T) {
	t.Setenv("REPLICA_ID", "")
	c, err := Load()
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if c.HTTPAddr != ":8080" || c.EventsTopic != "events" || c.MembersTopic != "sluice.ingestion.members" ||
		c.HeartbeatInterval != time.Second || c.MemberTTL != 3*time.Second || c.MaxBodyBytes != 1<<20 {
		t.Fatalf("defaults: %+v", c)
	}
	if c.ReplicaID == "" {
		t.Fatal("REPLICA_ID empty: want the host name")
	}
}

func TestValidateRejects(t *testing.T) {
	tests := []struct {
		env, value, want string
	}{
		{"MEMBER_TTL", "500ms", "MEMBER_TTL"},
		{"BUFFER_EVENTS", "0", "BUFFER_EVENTS"},
		{"MAX_BODY_BYTES", "-1", "MAX_BODY_BYTES"},
		{"API_KEYS", "k1", "API_KEYS entry 1"},
		{"API_KEYS", "k1:a,k1:b", "listed twice"},
		{"API_KEYS", "k1:a\x01", "control character"},
	}
	for _, tt := range tests {
		t.Run(tt.env+"="+tt.value, func(t *testing.T) {
			t.Setenv(tt.env, tt.value)
			_, err := Load()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error about %s", err, tt.want)
			}
		})
	}
}

func TestParseKeys(t *testing.T) {
	keys, err := ParseKeys(" k1:acme , k2:other:with:colons")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys["k1"] != "acme" || keys["k2"] != "other:with:colons" {
		t.Fatalf("got %v", keys)
	}
	if keys, err := ParseKeys(""); keys != nil || err != nil {
		t.Fatalf("empty: got %v, %v; want nil, nil (keys off)", keys, err)
	}
}
