package throttle_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
)

func describe(t *testing.T, s *throttletest.Stack, topic string) map[string]string {
	t.Helper()
	cl := &kafka.Client{Addr: kafka.TCP(s.Brokers()...), Timeout: 5 * time.Second}
	resp, err := cl.DescribeConfigs(t.Context(), &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range resp.Resources[0].ConfigEntries {
		got[e.ConfigName] = e.ConfigValue
	}
	return got
}

func TestEnsureTopic(t *testing.T) {
	s := throttletest.Start(t, throttletest.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	t.Run("fresh topic", func(t *testing.T) {
		info, err := throttle.EnsureTopic(ctx, s.Kafka(), throttle.TopicSpec{Name: "fresh", Partitions: 4})
		if err != nil {
			t.Fatal(err)
		}
		// The cluster's size caps the replication: one kfake broker, three real nodes.
		wantRF, wantISR := 1, "1"
		if throttletest.Real() {
			wantRF, wantISR = 3, "2"
		}
		if !info.Created || info.Partitions != 4 || info.ReplicationFactor != wantRF || len(info.Warnings) != 0 {
			t.Fatalf("got %+v, want created, 4 partitions, replication capped to %d, no warnings", info, wantRF)
		}
		got := describe(t, s, "fresh")
		for k, want := range map[string]string{
			"cleanup.policy":      "compact",
			"compression.type":    "uncompressed",
			"delete.retention.ms": "86400000",
			"min.insync.replicas": wantISR,
		} {
			if got[k] != want {
				t.Errorf("config %s: got %q, want %q", k, got[k], want)
			}
		}
	})
	t.Run("existing good topic", func(t *testing.T) {
		info, err := throttle.EnsureTopic(ctx, s.Kafka(), throttle.TopicSpec{Name: "fresh", Partitions: 4})
		if err != nil {
			t.Fatal(err)
		}
		if info.Created || len(info.Warnings) != 0 {
			t.Fatalf("got %+v, want an existing topic and no warnings", info)
		}
	})
	t.Run("existing topic, other partition count", func(t *testing.T) {
		info, err := throttle.EnsureTopic(ctx, s.Kafka(), throttle.TopicSpec{Name: "fresh", Partitions: 6})
		if err != nil {
			t.Fatal(err)
		}
		if info.Partitions != 4 || len(info.Warnings) != 1 || !strings.Contains(info.Warnings[0], "4 partitions, expected 6") {
			t.Fatalf("got %+v, want a warning naming 4 and 6 partitions", info)
		}
	})
	t.Run("non-compacted topic", func(t *testing.T) {
		cl := &kafka.Client{Addr: kafka.TCP(s.Brokers()...), Timeout: 5 * time.Second}
		resp, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
			Topic: "deleting", NumPartitions: 1, ReplicationFactor: 1,
			ConfigEntries: []kafka.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: "delete"}},
		}}})
		if err != nil || resp.Errors["deleting"] != nil {
			t.Fatalf("create: %v %v", err, resp.Errors)
		}
		_, err = throttle.EnsureTopic(ctx, s.Kafka(), throttle.TopicSpec{Name: "deleting", Partitions: 1})
		if !errors.Is(err, throttle.ErrNotCompacted) {
			t.Fatalf("got %v, want ErrNotCompacted", err)
		}
	})
	t.Run("broker unreachable", func(t *testing.T) {
		short, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := throttle.EnsureTopic(short, cluster.Config{Brokers: []string{"127.0.0.1:1"}}, throttle.TopicSpec{})
		if err == nil {
			t.Fatal("got nil, want an error")
		}
	})
}

func TestTopicConfigsCapInsync(t *testing.T) {
	tests := []struct {
		rf, isr int
		want    string
	}{{3, 2, "2"}, {2, 2, "1"}, {1, 2, "1"}, {5, 3, "3"}}
	for _, tt := range tests {
		got := throttle.TopicSpec{MinInsyncReplicas: tt.isr}.Configs(tt.rf)["min.insync.replicas"]
		if got != tt.want {
			t.Errorf("rf %d isr %d: got %s, want %s", tt.rf, tt.isr, got, tt.want)
		}
	}
}

// CreateTopics, which every service's topic creation goes through: it creates only what
// is missing, reports what it created, caps the replication factor at the cluster's
// size and min.insync.replicas below it, and leaves an existing topic as it is.
func TestCreateTopics(t *testing.T) {
	s := throttletest.Start(t, throttletest.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	brokers := len(s.Brokers())
	events := kafka.TopicConfig{Topic: "ct-events", NumPartitions: 3, ReplicationFactor: 5, ConfigEntries: []kafka.ConfigEntry{
		{ConfigName: "cleanup.policy", ConfigValue: "delete"}, {ConfigName: "min.insync.replicas", ConfigValue: "4"},
	}}
	created, err := cluster.CreateTopics(ctx, s.Kafka(), events, kafka.TopicConfig{Topic: "ct-other", NumPartitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(created) != 2 {
		t.Fatalf("got created %v, want both topics", created)
	}
	wantISR := strconv.Itoa(max(min(brokers, 5)-1, 1))
	if got := describe(t, s, "ct-events"); got["min.insync.replicas"] != wantISR || got["cleanup.policy"] != "delete" {
		t.Fatalf("got min.insync.replicas %q cleanup.policy %q, want %s and delete (%d brokers)",
			got["min.insync.replicas"], got["cleanup.policy"], wantISR, brokers)
	}
	// Again, with another partition count: nothing is created or changed.
	events.NumPartitions = 9
	created, err = cluster.CreateTopics(ctx, s.Kafka(), events)
	if err != nil || len(created) != 0 {
		t.Fatalf("second call: got created %v, err %v; want none, nil", created, err)
	}
	cl := &kafka.Client{Addr: kafka.TCP(s.Brokers()...), Timeout: 5 * time.Second}
	meta, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{"ct-events"}})
	if err != nil || len(meta.Topics) != 1 || len(meta.Topics[0].Partitions) != 3 {
		t.Fatalf("existing topic changed: %+v %v", meta, err)
	}
}

func TestNewWriterRefusesBadOptions(t *testing.T) {
	kc := cluster.Config{Brokers: []string{"127.0.0.1:1"}}
	for name, opt := range map[string]cluster.WriterOpt{
		"zero batch timeout": cluster.WithBatch(0, 0, 0),
		"negative records":   cluster.WithBatch(time.Millisecond, -1, 0),
		"no attempts":        cluster.WithRetries(0, time.Millisecond, time.Second),
		"backoff reversed":   cluster.WithRetries(3, time.Second, time.Millisecond),
		"zero write timeout": cluster.WithWriteTimeout(0),
	} {
		if _, err := cluster.NewWriter(kc, "t", opt); err == nil {
			t.Errorf("%s: got nil, want an error", name)
		}
	}
	if _, err := cluster.NewWriter(kc, ""); err == nil {
		t.Error("no topic: got nil, want an error")
	}
	w, err := cluster.NewWriter(kc, "t")
	if err != nil {
		t.Fatal(err)
	}
	if w.RequiredAcks != kafka.RequireAll {
		t.Errorf("got RequiredAcks %v, want all in-sync replicas", w.RequiredAcks)
	}
	if _, ok := w.Balancer.(*kafka.Murmur2Balancer); !ok {
		t.Errorf("got balancer %T, want Murmur2 (the Java client's)", w.Balancer)
	}
	if err := cluster.CloseWriter(w); err != nil {
		t.Fatal(err)
	}
}
