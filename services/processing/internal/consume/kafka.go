package consume

import (
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

// NewReader returns a consumer-group reader of topic. Offsets are committed only by
// CommitMessages, synchronously (CommitInterval 0): the Consumer commits an event's
// offset after handling it, never before.
func NewReader(kc throttle.KafkaConfig, topic, group string, log *zap.Logger) *kafka.Reader {
	if log == nil {
		log = zap.NewNop()
	}
	sugar := log.Sugar().With("topic", topic, "group", group)
	return kafka.NewReader(kafka.ReaderConfig{
		Brokers:  kc.Brokers,
		GroupID:  group,
		Topic:    topic,
		Dialer:   kc.Dialer(),
		MinBytes: 1,
		MaxBytes: 10 << 20,
		// MaxWait bounds how long a fetch waits for data, and so how long a shutdown
		// waits for an idle partition reader.
		MaxWait:        500 * time.Millisecond,
		CommitInterval: 0,
		// A group with no committed offset starts with the events already waiting:
		// they were accepted by ingestion and must be processed.
		StartOffset:           kafka.FirstOffset,
		HeartbeatInterval:     3 * time.Second,
		SessionTimeout:        30 * time.Second,
		RebalanceTimeout:      30 * time.Second,
		WatchPartitionChanges: true,
		ReadBackoffMin:        100 * time.Millisecond,
		ReadBackoffMax:        time.Second,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			sugar.Warnf("kafka reader: "+msg, args...)
		}),
	})
}
