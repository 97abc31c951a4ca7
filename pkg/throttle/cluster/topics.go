package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

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
func CreateTopics(ctx context.Context, kc Config, topics ...kafka.TopicConfig) ([]string, error) {
	if err := kc.Validate(); err != nil {
		return nil, err
	}
	cl := kc.Client(10 * time.Second)
	defer cl.Transport.(*kafka.Transport).CloseIdleConnections()
	names := make([]string, len(topics))
	for i, t := range topics {
		names[i] = t.Topic
	}
	meta, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: names})
	if err != nil {
		return nil, fmt.Errorf("create topics %v: metadata: %w", names, kc.Explain(err))
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
func WaitForTopics(ctx context.Context, kc Config, names ...string) error {
	cl := kc.Client(10 * time.Second)
	defer cl.Transport.(*kafka.Transport).CloseIdleConnections()
	meta, err := cl.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		return fmt.Errorf("wait for topics %v: metadata: %w", names, kc.Explain(err))
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
func TopicConfig(ctx context.Context, cl *kafka.Client, topic, name string) (string, error) {
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
