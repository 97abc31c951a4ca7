// Package mirror measures how far a second region's copy of the throttle topic lags
// behind the region that publishes. The publishing region's processing writes a
// heartbeat (its region's name and the time) to a small compacted topic, which
// MirrorMaker 2 copies with the throttle topic; every ingestion replica reads the topic
// of its own cluster and reports the age of the newest heartbeat per region. In the
// second region that age is the mirror's lag, in seconds, and it keeps growing when the
// mirror or the first region stops.
package mirror

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
)

// TopicConfig is how the heartbeat topic is created (cluster.CreateTopics): one
// partition, compacted, so it holds one record per region.
func TopicConfig(name string, replication, minInsync int) kafka.TopicConfig {
	return kafka.TopicConfig{Topic: name, NumPartitions: 1, ReplicationFactor: replication, ConfigEntries: []kafka.ConfigEntry{
		{ConfigName: "cleanup.policy", ConfigValue: "compact"},
		{ConfigName: "min.insync.replicas", ConfigValue: strconv.Itoa(minInsync)},
	}}
}

// Encode is a heartbeat's value: the time in Unix milliseconds, as decimal text.
func Encode(at time.Time) []byte { return strconv.AppendInt(nil, at.UnixMilli(), 10) }

// Decode reads a heartbeat's value.
func Decode(v []byte) (time.Time, error) {
	ms, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil || ms <= 0 {
		return time.Time{}, fmt.Errorf("heartbeat value %q: want Unix milliseconds", v)
	}
	return time.UnixMilli(ms), nil
}

// Writer is what Beat writes with (a *kafka.Writer).
type Writer interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// Beat writes the region's heartbeat every interval until ctx ends. A failed write is
// logged and the next beat tries again: the heartbeat's age in the other region shows
// the gap.
func Beat(ctx context.Context, w Writer, region string, every time.Duration, log *zap.Logger) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if err := w.WriteMessages(ctx, kafka.Message{Key: []byte(region), Value: Encode(time.Now())}); err != nil && ctx.Err() == nil {
			log.Warn("write mirror heartbeat", zap.String("region", region), zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Ages keeps the newest heartbeat per region. Apply is a follow.ApplyFunc.
type Ages struct {
	log *zap.Logger

	mu  sync.Mutex
	at  map[string]time.Time
	bad int64
}

// NewAges returns an empty Ages.
func NewAges(log *zap.Logger) *Ages { return &Ages{log: log, at: map[string]time.Time{}} }

// Apply takes one record of the heartbeat topic. A record that is no heartbeat is
// skipped, counted and logged with its partition and offset.
func (a *Ages) Apply(_ context.Context, msg kafka.Message) error {
	at, err := Decode(msg.Value)
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil || len(msg.Key) == 0 {
		a.bad++
		a.log.Warn("skipping a record of the mirror heartbeat topic that is no heartbeat",
			zap.Int("partition", msg.Partition), zap.Int64("offset", msg.Offset), zap.ByteString("key", msg.Key), zap.Error(err))
		return nil
	}
	if region := string(msg.Key); at.After(a.at[region]) {
		a.at[region] = at
	}
	return nil
}

// Age returns, per region, how old its newest heartbeat is at now.
func (a *Ages) Age(now time.Time) map[string]time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]time.Duration, len(a.at))
	for r, at := range a.at {
		out[r] = now.Sub(at)
	}
	return out
}

// Skipped is how many records were no heartbeat.
func (a *Ages) Skipped() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.bad
}
