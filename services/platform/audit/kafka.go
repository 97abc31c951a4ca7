package audit

import (
	"context"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
)

// NewWriter returns the writer a Tally publishes to topic with. Close it with
// cluster.CloseWriter.
func NewWriter(kc cluster.Config, topic string) (*kafka.Writer, error) {
	// Counts are republished every interval: a write that fails is retried then.
	return cluster.NewWriter(kc, topic, cluster.WithRetries(2, 10*time.Millisecond, 250*time.Millisecond))
}

// EnsureTopic creates the audit topic if it is missing, and reports whether it did.
func EnsureTopic(ctx context.Context, kc cluster.Config, topic string, replication, minInsync int) (bool, error) {
	created, err := cluster.CreateTopics(ctx, kc, TopicConfig(topic, replication, minInsync))
	return len(created) > 0, err
}
