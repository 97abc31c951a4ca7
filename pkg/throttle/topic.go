package throttle

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

// TopicSpec describes the throttle topic. The zero value of each field takes the default
// noted beside it; DefaultTopicSpec returns them filled in.
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

// DefaultTopicSpec returns the production defaults.
func DefaultTopicSpec() TopicSpec {
	var s TopicSpec
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
func EnsureTopic(ctx context.Context, kc KafkaConfig, spec TopicSpec) (TopicInfo, error) {
	if err := kc.validate(); err != nil {
		return TopicInfo{}, err
	}
	spec.fill()
	info := TopicInfo{Name: spec.Name}
	var entries []kafka.ConfigEntry
	for k, v := range spec.Configs(spec.ReplicationFactor) {
		entries = append(entries, kafka.ConfigEntry{ConfigName: k, ConfigValue: v})
	}
	created, err := CreateTopics(ctx, kc, kafka.TopicConfig{
		Topic: spec.Name, NumPartitions: spec.Partitions, ReplicationFactor: spec.ReplicationFactor, ConfigEntries: entries,
	})
	if err != nil {
		return info, err
	}
	info.Created = len(created) == 1

	cl := kc.client(10 * time.Second)
	defer cl.Transport.(*kafka.Transport).CloseIdleConnections()
	meta, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{spec.Name}})
	if err != nil {
		return info, fmt.Errorf("ensure topic %s: metadata: %w", spec.Name, kc.explain(err))
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

	policy, err := topicConfig(ctx, cl, spec.Name, "cleanup.policy")
	if err != nil {
		return info, err
	}
	if policy != "compact" {
		return info, fmt.Errorf("%w: topic %s has cleanup.policy=%q, want \"compact\"", ErrNotCompacted, spec.Name, policy)
	}
	return info, nil
}

func topicExists(meta *kafka.MetadataResponse, name string) bool {
	for _, t := range meta.Topics {
		if t.Name == name && t.Error == nil && len(t.Partitions) > 0 {
			return true
		}
	}
	return false
}

// CreateTopics creates each topic that does not exist yet and waits until every broker
// knows it (WaitForTopics). Existing topics are left as they are, and another client
// creating one at the same moment is fine. The replication factor is capped by the
// cluster's size and a min.insync.replicas entry below it, so the same settings work on
// a one-broker development cluster. It returns the names it created.
func CreateTopics(ctx context.Context, kc KafkaConfig, topics ...kafka.TopicConfig) ([]string, error) {
	if err := kc.validate(); err != nil {
		return nil, err
	}
	cl := kc.client(10 * time.Second)
	defer cl.Transport.(*kafka.Transport).CloseIdleConnections()
	names := make([]string, len(topics))
	for i, t := range topics {
		names[i] = t.Topic
	}
	meta, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: names})
	if err != nil {
		return nil, fmt.Errorf("create topics %v: metadata: %w", names, kc.explain(err))
	}
	brokers := max(len(meta.Brokers), 1)
	var missing []kafka.TopicConfig
	for _, t := range topics {
		if topicExists(meta, t.Topic) {
			continue
		}
		t.NumPartitions = max(t.NumPartitions, 1)
		t.ReplicationFactor = min(max(t.ReplicationFactor, 1), brokers)
		t.ConfigEntries = append([]kafka.ConfigEntry(nil), t.ConfigEntries...)
		for i, e := range t.ConfigEntries {
			if e.ConfigName == "min.insync.replicas" {
				isr, err := strconv.Atoi(e.ConfigValue)
				if err != nil {
					return nil, fmt.Errorf("create topic %s: min.insync.replicas %q: %w", t.Topic, e.ConfigValue, err)
				}
				t.ConfigEntries[i].ConfigValue = strconv.Itoa(min(max(isr, 1), max(t.ReplicationFactor-1, 1)))
			}
		}
		missing = append(missing, t)
	}
	if len(missing) == 0 {
		return nil, nil
	}
	resp, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: missing})
	if err != nil {
		return nil, fmt.Errorf("create topics: %w", err)
	}
	var created, wait []string
	for _, t := range missing {
		// kafka-go reports per-topic failures in the response, not in err.
		switch terr := resp.Errors[t.Topic]; {
		case terr == nil:
			created = append(created, t.Topic)
		case !errors.Is(terr, kafka.TopicAlreadyExists):
			return created, fmt.Errorf("create topic %s: %w", t.Topic, terr)
		}
		wait = append(wait, t.Topic)
	}
	if err := WaitForTopics(ctx, kc, wait...); err != nil {
		return created, fmt.Errorf("create topics: %w", err)
	}
	return created, nil
}

// WaitForTopics waits until every broker of the cluster knows the topics and a leader of
// each partition. Right after CreateTopics some brokers' metadata lags (by seconds on
// Kafka 3.9), and kafka-go caches metadata from whichever broker it asked: a writer
// created then fails with UNKNOWN_TOPIC_OR_PARTITION until its cache expires. Call it
// after creating topics, before writing to them.
func WaitForTopics(ctx context.Context, kc KafkaConfig, names ...string) error {
	cl := kc.client(10 * time.Second)
	defer cl.Transport.(*kafka.Transport).CloseIdleConnections()
	meta, err := cl.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		return fmt.Errorf("wait for topics %v: metadata: %w", names, kc.explain(err))
	}
	d := kc.Dialer()
	for _, b := range meta.Brokers {
		addr := net.JoinHostPort(b.Host, strconv.Itoa(b.Port))
		for _, name := range names {
			for {
				conn, err := d.DialContext(ctx, "tcp", addr) // this broker's own view
				if err == nil {
					_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
					var parts []kafka.Partition
					parts, err = conn.ReadPartitions(name)
					_ = conn.Close()
					if err == nil && len(parts) > 0 && allLed(parts) {
						break
					}
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("wait for topic %s on broker %s: %w (gave up: %w)", name, addr, err, ctx.Err())
				case <-time.After(50 * time.Millisecond):
				}
			}
		}
	}
	return nil
}

func allLed(parts []kafka.Partition) bool {
	for _, p := range parts {
		if p.Leader.ID < 0 || p.Leader.Host == "" {
			return false
		}
	}
	return true
}

// topicConfig reads one config of a topic back from the broker. A topic just created may
// be unknown for a moment to the broker kafka-go asks (the controller it names, whose
// metadata can lag the broker that answered waitForTopic): that answer is asked again.
func topicConfig(ctx context.Context, cl *kafka.Client, topic, name string) (string, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, err := topicConfigOnce(ctx, cl, topic, name)
		if !errors.Is(err, kafka.UnknownTopicOrPartition) || time.Now().After(deadline) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func topicConfigOnce(ctx context.Context, cl *kafka.Client, topic, name string) (string, error) {
	resp, err := cl.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: []string{name},
	}}})
	if err != nil {
		return "", fmt.Errorf("describe configs of %s: %w", topic, err)
	}
	for _, r := range resp.Resources {
		if r.Error != nil {
			return "", fmt.Errorf("describe configs of %s: %w", topic, r.Error)
		}
		for _, e := range r.ConfigEntries {
			if e.ConfigName == name {
				return e.ConfigValue, nil
			}
		}
	}
	return "", fmt.Errorf("describe configs of %s: %s not returned", topic, name)
}
