package audit

import (
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
)

// Connect returns the Tally of a new incarnation of replica in tier, publishing to
// topic, and the function that closes its writer.
func Connect(kc cluster.Config, topic, tier, replica string, opts ...Opt) (*Tally, func() error, error) {
	w, err := NewWriter(kc, topic)
	if err != nil {
		return nil, nil, err
	}
	t, err := New(tier, Incarnation(replica), w, opts...)
	if err != nil {
		_ = cluster.CloseWriter(w)
		return nil, nil, err
	}
	return t, func() error { return cluster.CloseWriter(w) }, nil
}

// NewWriter returns the writer a Tally publishes to topic with. Close it with
// cluster.CloseWriter.
func NewWriter(kc cluster.Config, topic string) (*kafka.Writer, error) {
	// Counts are republished every interval: a write that fails is retried then.
	return cluster.NewWriter(kc, topic, cluster.WithRetries(2, 10*time.Millisecond, 250*time.Millisecond))
}
