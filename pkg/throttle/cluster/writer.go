package cluster

import (
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
)

// WriterOpt tunes a writer made by NewWriter.
type WriterOpt interface{ applyWriter(*kafka.Writer) }

type writerOptionFunc func(*kafka.Writer)

func (f writerOptionFunc) applyWriter(w *kafka.Writer) { f(w) }

// WithBatch sets how long the writer waits to fill a batch (default 2ms; kafka-go's
// own default of 1s would make every synchronous write take a second), and the most
// records and bytes in one (0: kafka-go's defaults, 100 records and 1 MiB).
func WithBatch(timeout time.Duration, records int, bytes int64) WriterOpt {
	return writerOptionFunc(func(w *kafka.Writer) { w.BatchTimeout, w.BatchSize, w.BatchBytes = timeout, records, bytes })
}

// WithRetries bounds kafka-go's attempts at one batch and the backoff between them
// (default 3 attempts, 10ms to 250ms). A caller that retries itself keeps it low, so a
// failure reaches it quickly.
func WithRetries(attempts int, lo, hi time.Duration) WriterOpt {
	return writerOptionFunc(func(w *kafka.Writer) { w.MaxAttempts, w.WriteBackoffMin, w.WriteBackoffMax = attempts, lo, hi })
}

// WithWriteTimeout bounds one produce request (default 10s).
func WithWriteTimeout(d time.Duration) WriterOpt {
	return writerOptionFunc(func(w *kafka.Writer) { w.WriteTimeout = d })
}

// WithBalancer wraps the writer's balancer (Murmur2) in wrap, which must place each
// record where the one it wraps does.
func WithBalancer(wrap func(kafka.Balancer) kafka.Balancer) WriterOpt {
	return writerOptionFunc(func(w *kafka.Writer) { w.Balancer = wrap(w.Balancer) })
}

// writerMetadataTTL is how long a writer trusts the leaders it knows.
const writerMetadataTTL = time.Second

// NewWriter returns a synchronous writer to topic with the settings every Sluice writer
// shares. It waits for every in-sync replica (a kafka.Writer literal defaults to
// fire-and-forget), and places records with the Murmur2 balancer, the Java client's
// partitioner, so every Kafka client puts a key's records on the same partition (kafka-go's
// default, round robin, ignores the key). It never creates topics: CreateTopics and
// EnsureTopic do, with the right settings. Close it with CloseWriter.
func NewWriter(kc Config, topic string, opts ...WriterOpt) (*kafka.Writer, error) {
	if err := kc.Validate(); err != nil {
		return nil, err
	}
	if topic == "" {
		return nil, errors.New("new writer: no topic")
	}
	w := &kafka.Writer{
		Addr:  kafka.TCP(kc.Brokers...),
		Topic: topic,
		// kafka-go learns of a new leader only when its metadata expires, not when a
		// write to the old one fails: a short lifetime bounds how long writes to the
		// partitions of a crashed broker keep failing after Kafka has moved them.
		Transport:       kc.TransportTTL(writerMetadataTTL),
		Balancer:        &kafka.Murmur2Balancer{},
		RequiredAcks:    kafka.RequireAll,
		BatchTimeout:    2 * time.Millisecond,
		MaxAttempts:     3,
		WriteBackoffMin: 10 * time.Millisecond,
		WriteBackoffMax: 250 * time.Millisecond,
		WriteTimeout:    10 * time.Second,
	}
	for _, o := range opts {
		o.applyWriter(w)
	}
	switch {
	case w.BatchTimeout <= 0 || w.BatchSize < 0 || w.BatchBytes < 0:
		return nil, fmt.Errorf("new writer to %s: batch timeout must be positive, sizes not negative", topic)
	case w.MaxAttempts < 1 || w.WriteBackoffMin <= 0 || w.WriteBackoffMax < w.WriteBackoffMin:
		return nil, fmt.Errorf("new writer to %s: attempts must be >= 1, backoff positive and ordered", topic)
	case w.WriteTimeout <= 0:
		return nil, fmt.Errorf("new writer to %s: write timeout must be positive", topic)
	}
	return w, nil
}

// CloseWriter closes a writer made by NewWriter: it waits for writes under way, then
// closes its transport's idle connections, which kafka.Writer.Close leaves open.
func CloseWriter(w *kafka.Writer) error {
	err := w.Close()
	if tr, ok := w.Transport.(*kafka.Transport); ok {
		tr.CloseIdleConnections()
	}
	if err != nil {
		return fmt.Errorf("close writer to %s: %w", w.Topic, err)
	}
	return nil
}
