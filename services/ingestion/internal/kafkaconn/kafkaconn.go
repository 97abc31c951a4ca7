// Package kafkaconn builds the kafka-go writers and client ingestion uses from a
// throttle.KafkaConfig, and creates the events topic.
package kafkaconn

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

// WriterConfig tunes a keyed writer.
type WriterConfig struct {
	Topic        string
	BatchTimeout time.Duration
	BatchSize    int
	BatchBytes   int64
	// MaxAttempts is kafka-go's own retries per batch; callers that retry themselves keep
	// it low so a failure reaches them quickly.
	MaxAttempts int
}

// Writer returns a synchronous writer that waits for every in-sync replica
// (RequiredAcks: all; a kafka.Writer literal defaults to fire-and-forget) and places
// records with the Murmur2 balancer, the Java client's partitioner, so every Kafka client
// puts a customer's (or a replica's) records on the same partition.
func Writer(kc throttle.KafkaConfig, cfg WriterConfig) *kafka.Writer {
	return &kafka.Writer{
		Addr:            kafka.TCP(kc.Brokers...),
		Topic:           cfg.Topic,
		Balancer:        &kafka.Murmur2Balancer{},
		RequiredAcks:    kafka.RequireAll,
		BatchTimeout:    cfg.BatchTimeout,
		BatchSize:       cfg.BatchSize,
		BatchBytes:      cfg.BatchBytes,
		MaxAttempts:     cfg.MaxAttempts,
		WriteBackoffMin: 10 * time.Millisecond,
		WriteBackoffMax: 250 * time.Millisecond,
		Transport:       kc.Transport(),
	}
}

// Close closes a writer made by Writer and its transport's idle connections, which
// would otherwise outlive it.
func Close(w *kafka.Writer) error {
	err := w.Close()
	if tr, ok := w.Transport.(*kafka.Transport); ok {
		tr.CloseIdleConnections()
	}
	if err != nil {
		return fmt.Errorf("close writer of %s: %w", w.Topic, err)
	}
	return nil
}

// EnsureEventsTopic creates the events topic with the delete cleanup policy when it does
// not exist; an existing topic is left as it is. The replication factor is capped by the
// cluster's size, so the same settings work on a one-broker development cluster.
func EnsureEventsTopic(ctx context.Context, kc throttle.KafkaConfig, topic string, partitions, replication, minISR int) (created bool, err error) {
	tr := kc.Transport()
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(kc.Brokers...), Timeout: 10 * time.Second, Transport: tr}
	meta, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return false, fmt.Errorf("ensure topic %s: metadata: %w", topic, err)
	}
	for _, t := range meta.Topics {
		if t.Name == topic && t.Error == nil && len(t.Partitions) > 0 {
			return false, nil
		}
	}
	rf := min(max(replication, 1), max(len(meta.Brokers), 1))
	isr := min(max(minISR, 1), max(rf-1, 1))
	resp, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic, NumPartitions: partitions, ReplicationFactor: rf,
		ConfigEntries: []kafka.ConfigEntry{
			{ConfigName: "cleanup.policy", ConfigValue: "delete"},
			{ConfigName: "min.insync.replicas", ConfigValue: strconv.Itoa(isr)},
		},
	}}})
	if err != nil {
		return false, fmt.Errorf("ensure topic %s: create: %w", topic, err)
	}
	// kafka-go reports per-topic failures in the response, not in err.
	if terr := resp.Errors[topic]; terr != nil {
		if errors.Is(terr, kafka.TopicAlreadyExists) {
			return false, nil
		}
		return false, fmt.Errorf("ensure topic %s: create: %w", topic, terr)
	}
	if err := throttle.WaitForTopics(ctx, kc, topic); err != nil {
		return true, fmt.Errorf("ensure topic %s: %w", topic, err)
	}
	return true, nil
}
