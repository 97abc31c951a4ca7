package consume

import (
	"context"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
)

// groupConfig is the consumer group of the events topic. Offsets are committed only by
// the Consumer, after the events before them were handled.
func groupConfig(kc cluster.Config, topic, group string, log *zap.Logger) kafka.ConsumerGroupConfig {
	sugar := log.Sugar().With("topic", topic, "group", group)
	return kafka.ConsumerGroupConfig{
		ID:      group,
		Brokers: kc.Brokers,
		Dialer:  kc.Dialer(),
		Topics:  []string{topic},
		// A group with no committed offset starts with the events already waiting:
		// they were accepted by ingestion and must be processed.
		StartOffset:           kafka.FirstOffset,
		HeartbeatInterval:     3 * time.Second,
		SessionTimeout:        30 * time.Second,
		RebalanceTimeout:      30 * time.Second,
		WatchPartitionChanges: true,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			sugar.Warnf("kafka consumer group: "+msg, args...)
		}),
	}
}

// partitionReader reads one assigned partition from offset (a committed offset, or
// kafka.FirstOffset).
func partitionReader(kc cluster.Config, topic string, partition int, offset int64, log *zap.Logger) (*kafka.Reader, error) {
	sugar := log.Sugar().With("topic", topic, "partition", partition)
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:   kc.Brokers,
		Topic:     topic,
		Partition: partition,
		Dialer:    kc.Dialer(),
		MinBytes:  1,
		MaxBytes:  10 << 20,
		// MaxWait bounds how long a fetch waits for data, and so how long a rebalance or
		// a shutdown waits for an idle partition reader.
		MaxWait:        500 * time.Millisecond,
		QueueCapacity:  1000,
		ReadBackoffMin: 100 * time.Millisecond,
		ReadBackoffMax: time.Second,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			sugar.Warnf("kafka reader: "+msg, args...)
		}),
	})
	if err := r.SetOffset(offset); err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("read %s/%d from %d: %w", topic, partition, offset, err)
	}
	return r, nil
}

// endOffsets returns the first and end offsets of the partitions, to tell which have
// nothing to read.
func endOffsets(ctx context.Context, kc cluster.Config, topic string, partitions []int) (first, end map[int]int64, err error) {
	tr := kc.Transport()
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(kc.Brokers...), Timeout: 10 * time.Second, Transport: tr}
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for _, p := range partitions {
		req.Topics[topic] = append(req.Topics[topic], kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	resp, err := cl.ListOffsets(ctx, req)
	if err != nil {
		return nil, nil, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	first, end = map[int]int64{}, map[int]int64{}
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			return nil, nil, fmt.Errorf("list offsets of %s/%d: %w", topic, po.Partition, po.Error)
		}
		first[po.Partition], end[po.Partition] = po.FirstOffset, po.LastOffset
	}
	return first, end, nil
}
