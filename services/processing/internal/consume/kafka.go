package consume

import (
	"context"
	"errors"
	"fmt"
	"strconv"
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

// NewWriter returns a writer to topic that waits for every in-sync replica (kafka-go's
// default is fire-and-forget), partitions by key like the Java client (Murmur2, so a
// customer's events stay on one partition whichever client wrote them), and sends a
// synchronous write after a few milliseconds instead of kafka-go's default second.
func NewWriter(kc throttle.KafkaConfig, topic string) *kafka.Writer {
	return &kafka.Writer{
		Addr:                   kafka.TCP(kc.Brokers...),
		Topic:                  topic,
		Transport:              kc.Transport(),
		Balancer:               &kafka.Murmur2Balancer{},
		RequiredAcks:           kafka.RequireAll,
		BatchTimeout:           2 * time.Millisecond,
		MaxAttempts:            3,
		WriteTimeout:           10 * time.Second,
		AllowAutoTopicCreation: false,
	}
}

// CloseWriter closes a writer from NewWriter: it waits for writes under way, then
// closes the writer's idle connections, which kafka.Writer.Close leaves open when the
// Transport is the caller's.
func CloseWriter(w *kafka.Writer) error {
	err := w.Close()
	if t, ok := w.Transport.(*kafka.Transport); ok {
		t.CloseIdleConnections()
	}
	if err != nil {
		return fmt.Errorf("close writer to %s: %w", w.Topic, err)
	}
	return nil
}

// TopicSpec describes one of the event topics the service creates.
type TopicSpec struct {
	Name              string
	Partitions        int
	ReplicationFactor int // capped by the number of brokers
	MinInsyncReplicas int // capped below the replication factor
}

// EnsureTopics creates the topics that do not exist yet and waits until the cluster
// lists them. Existing topics are left as they are. It returns the names it created.
func EnsureTopics(ctx context.Context, kc throttle.KafkaConfig, specs ...TopicSpec) ([]string, error) {
	if len(kc.Brokers) == 0 {
		return nil, errors.New("ensure topics: no brokers")
	}
	tr := kc.Transport()
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(kc.Brokers...), Timeout: 10 * time.Second, Transport: tr}
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	meta, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: names})
	if err != nil {
		return nil, fmt.Errorf("ensure topics %v: metadata: %w", names, err)
	}
	brokers := max(len(meta.Brokers), 1)
	var missing []kafka.TopicConfig
	for _, s := range specs {
		if exists(meta, s.Name) {
			continue
		}
		rf := min(max(s.ReplicationFactor, 1), brokers)
		isr := min(max(s.MinInsyncReplicas, 1), max(rf-1, 1))
		missing = append(missing, kafka.TopicConfig{
			Topic: s.Name, NumPartitions: max(s.Partitions, 1), ReplicationFactor: rf,
			ConfigEntries: []kafka.ConfigEntry{{ConfigName: "min.insync.replicas", ConfigValue: strconv.Itoa(isr)}},
		})
	}
	if len(missing) == 0 {
		return nil, nil
	}
	resp, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: missing})
	if err != nil {
		return nil, fmt.Errorf("ensure topics: create: %w", err)
	}
	var created []string
	for _, t := range missing {
		// Failures are reported per topic, not in err. Another replica creating the
		// same topic at the same moment is fine.
		switch terr := resp.Errors[t.Topic]; {
		case terr == nil:
			created = append(created, t.Topic)
		case errors.Is(terr, kafka.TopicAlreadyExists):
		default:
			return created, fmt.Errorf("ensure topics: create %s: %w", t.Topic, terr)
		}
	}
	for {
		meta, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: names})
		if err == nil && allExist(meta, names) {
			if err := throttle.WaitForTopics(ctx, kc, names...); err != nil {
				return created, fmt.Errorf("ensure topics: %w", err)
			}
			return created, nil
		}
		select {
		case <-ctx.Done():
			return created, fmt.Errorf("ensure topics %v: wait for metadata: %w", names, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func exists(meta *kafka.MetadataResponse, name string) bool {
	for _, t := range meta.Topics {
		if t.Name == name && t.Error == nil && len(t.Partitions) > 0 {
			return true
		}
	}
	return false
}

func allExist(meta *kafka.MetadataResponse, names []string) bool {
	for _, n := range names {
		if !exists(meta, n) {
			return false
		}
	}
	return true
}
