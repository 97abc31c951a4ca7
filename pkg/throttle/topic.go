package throttle

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
)

// TopicSpec describes the throttle topic. The zero value of each field takes the default
// noted beside it: TopicSpec{} is the production topic.
type TopicSpec struct {
	Name       string // default "sluice.throttles"
	Partitions int    // default 6; never change it later (keys would move partition)
	// ReplicationFactor and MinInsyncReplicas are capped by the cluster's size, so the
	// same defaults work on a one-broker development cluster.
	ReplicationFactor int // default 3
	MinInsyncReplicas int // default 2
	// DeleteRetention is how long a tombstone stays readable. It must exceed the longest
	// time a reader takes to reach the head of the topic, or a slow reader that misses
	// the tombstone keeps the deleted throttle forever.
	DeleteRetention time.Duration // default 24h
	// SegmentMs and MaxCompactionLag bound how long records wait in the active segment
	// (which is never compacted), and so how much a rebuild reads.
	SegmentMs        time.Duration // default 1h
	MaxCompactionLag time.Duration // default 6h
	// MinCompactionLag keeps every record in the log at least this long. Publishers rely
	// on it: a throttle hidden behind a stale expiry tombstone is re-published within
	// this time, before compaction could drop it (see Publisher).
	MinCompactionLag time.Duration // default 10m
}

// DefaultTopic is the throttle topic's default name.
const DefaultTopic = "sluice.throttles"

// WithDefaults is s with every zero field set to its default.
func (s TopicSpec) WithDefaults() TopicSpec {
	s.fill()
	return s
}

func (s *TopicSpec) fill() {
	if s.Name == "" {
		s.Name = DefaultTopic
	}
	if s.Partitions <= 0 {
		s.Partitions = 6
	}
	if s.ReplicationFactor <= 0 {
		s.ReplicationFactor = 3
	}
	if s.MinInsyncReplicas <= 0 {
		s.MinInsyncReplicas = 2
	}
	if s.DeleteRetention <= 0 {
		s.DeleteRetention = 24 * time.Hour
	}
	if s.SegmentMs <= 0 {
		s.SegmentMs = time.Hour
	}
	if s.MaxCompactionLag <= 0 {
		s.MaxCompactionLag = 6 * time.Hour
	}
	if s.MinCompactionLag <= 0 {
		s.MinCompactionLag = 10 * time.Minute
	}
}

// Configs returns the topic-level configs EnsureTopic sets, for a replication factor of
// rf (MinInsyncReplicas is capped below it).
func (s TopicSpec) Configs(rf int) map[string]string {
	s.fill()
	isr := s.MinInsyncReplicas
	if isr > rf-1 {
		isr = max(rf-1, 1)
	}
	ms := func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }
	return map[string]string{
		"cleanup.policy":        "compact",
		"min.insync.replicas":   strconv.Itoa(isr),
		"delete.retention.ms":   ms(s.DeleteRetention),
		"segment.ms":            ms(s.SegmentMs),
		"max.compaction.lag.ms": ms(s.MaxCompactionLag),
		"min.compaction.lag.ms": ms(s.MinCompactionLag),
		// The broker stores every batch uncompressed, whatever a producer sends: the
		// records are small and few, and other teams' readers of this source of truth may
		// use kafka-go's Reader, which can loop on a compressed batch whose tail was
		// compacted (segmentio/kafka-go #1416, #874, #1393). Sluice's own read loop reads
		// compressed batches too, for topics created with another setting.
		"compression.type": "uncompressed",
		// A leader that was not in sync could lose acknowledged throttles.
		"unclean.leader.election.enable": "false",
	}
}

// TopicInfo is what EnsureTopic found or made.
type TopicInfo struct {
	Name              string
	Partitions        int
	ReplicationFactor int
	Created           bool
	// Warnings lists problems that do not stop a service, such as a partition count
	// other than the spec's. The caller logs them.
	Warnings []string
}

// EnsureTopic creates the compacted throttle topic, or checks an existing one. It refuses
// (ErrNotCompacted) a topic whose cleanup.policy is not exactly "compact": a delete
// policy would silently drop throttles by age. A partition count that differs from the
// spec is reported in TopicInfo.Warnings, not changed: repartitioning a keyed compacted
// topic strands old values and tombstones.
func EnsureTopic(ctx context.Context, kc cluster.Config, spec TopicSpec) (TopicInfo, error) {
	if err := kc.Validate(); err != nil {
		return TopicInfo{}, err
	}
	spec.fill()
	info := TopicInfo{Name: spec.Name}
	var entries []kafka.ConfigEntry
	for k, v := range spec.Configs(spec.ReplicationFactor) {
		entries = append(entries, kafka.ConfigEntry{ConfigName: k, ConfigValue: v})
	}
	created, err := cluster.CreateTopics(ctx, kc, kafka.TopicConfig{
		Topic: spec.Name, NumPartitions: spec.Partitions, ReplicationFactor: spec.ReplicationFactor, ConfigEntries: entries,
	})
	if err != nil {
		return info, err
	}
	info.Created = len(created) == 1

	cl := kc.Client(10 * time.Second)
	defer cl.Transport.(*kafka.Transport).CloseIdleConnections()
	meta, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{spec.Name}})
	if err != nil {
		return info, fmt.Errorf("ensure topic %s: metadata: %w", spec.Name, kc.Explain(err))
	}
	for _, t := range meta.Topics {
		if t.Name == spec.Name {
			info.Partitions = len(t.Partitions)
			if len(t.Partitions) > 0 {
				info.ReplicationFactor = len(t.Partitions[0].Replicas)
			}
		}
	}
	if info.Partitions != spec.Partitions {
		info.Warnings = append(info.Warnings, fmt.Sprintf(
			"topic %s has %d partitions, expected %d; keeping it as it is (repartitioning a compacted topic moves keys)",
			spec.Name, info.Partitions, spec.Partitions))
	}

	policy, err := cluster.TopicConfig(ctx, cl, spec.Name, "cleanup.policy")
	if err != nil {
		return info, err
	}
	if policy != "compact" {
		return info, fmt.Errorf("%w: topic %s has cleanup.policy=%q, want \"compact\"", ErrNotCompacted, spec.Name, policy)
	}
	return info, nil
}
