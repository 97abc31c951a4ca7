package throttle

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
)

// Publisher writes throttles and tombstones to the throttle topic.
//
// Every write is synchronous and acknowledged by all in-sync replicas. Records are keyed
// by customer and placed with the Murmur2 partitioner, as any Java-client producer would
// place them. kafka-go has no idempotent producer, so a retried write can land twice;
// that is harmless because a throttle is identified by its ID and applying the same
// record twice leaves a table as it was.
type Publisher struct {
	w     *kafka.Writer
	kc    cluster.Config
	codec *Codec
	topic string
}

type publisherConfig struct {
	maxAttempts  int
	backoffMin   time.Duration
	backoffMax   time.Duration
	batchTimeout time.Duration
	writeTimeout time.Duration
}

// withRetries bounds the attempts of one write and the backoff between them (default 5
// attempts, 50ms to 1s).
func withRetries(attempts int, lo, hi time.Duration) Option {
	return publisherOption("withRetries", func(c *options) { c.maxAttempts, c.backoffMin, c.backoffMax = attempts, lo, hi })
}

// withBatchTimeout sets how long the writer waits to fill a batch (default 2ms; kafka-go's
// default of 1s would make every synchronous publish take a second).
func withBatchTimeout(d time.Duration) Option {
	return publisherOption("withBatchTimeout", func(c *options) { c.batchTimeout = d })
}

// NewPublisher returns a publisher to topic. Close it to release its connections.
func NewPublisher(kc cluster.Config, topic string, codec *Codec, opts ...Option) (*Publisher, error) {
	if err := kc.Validate(); err != nil {
		return nil, err
	}
	if topic == "" || codec == nil {
		return nil, errors.New("new publisher: topic and codec are required")
	}
	cfg, err := buildOptions(opts, false)
	if err != nil {
		return nil, fmt.Errorf("new publisher: %w", err)
	}
	w, err := cluster.NewWriter(kc, topic, cluster.WithBatch(cfg.batchTimeout, 0, 0),
		cluster.WithRetries(cfg.maxAttempts, cfg.backoffMin, cfg.backoffMax), cluster.WithWriteTimeout(cfg.writeTimeout))
	if err != nil {
		return nil, fmt.Errorf("new publisher: %w", err)
	}
	return &Publisher{w: w, kc: kc, codec: codec, topic: topic}, nil
}

// Set publishes r as its customer's throttle. It returns once all in-sync replicas have
// the record, or with an error when ctx ends or the retries are spent.
func (p *Publisher) Set(ctx context.Context, r Record) error {
	value, err := p.codec.Encode(&r)
	if err != nil {
		return fmt.Errorf("publish throttle for %q: %w", r.Customer, err)
	}
	return p.write(ctx, kafka.Message{Key: key(r.Customer), Value: value}, "publish throttle", r.Customer)
}

// Lift publishes a tombstone for the customer: whatever throttle it has is lifted, and
// compaction later drops the key. For an operator's decision; the expiry sweeper uses
// Expire, which cannot remove a newer throttle.
func (p *Publisher) Lift(ctx context.Context, customer string) error {
	if err := ValidateCustomer(customer); err != nil {
		return fmt.Errorf("lift throttle: %w", err)
	}
	return p.write(ctx, kafka.Message{Key: key(customer), Value: nil}, "lift throttle", customer)
}

// Expire publishes a tombstone that removes r only if r is still the customer's current
// throttle when readers apply it (header HeaderExpires names r.ID).
func (p *Publisher) Expire(ctx context.Context, r Record) error {
	if err := ValidateCustomer(r.Customer); err != nil {
		return fmt.Errorf("expire throttle: %w", err)
	}
	msg := kafka.Message{Key: key(r.Customer), Value: nil, Headers: []kafka.Header{
		{Key: HeaderExpires, Value: []byte(r.ID)},
		{Key: headerExpiresCreated, Value: strconv.AppendInt(nil, r.CreatedAt.UnixMilli(), 10)},
	}}
	return p.write(ctx, msg, "expire throttle", r.Customer)
}

func (p *Publisher) write(ctx context.Context, msg kafka.Message, op, customer string) error {
	// Value nil is the tombstone on the wire; an empty slice would be an empty record.
	if err := p.w.WriteMessages(ctx, msg); err != nil {
		return fmt.Errorf("%s for %q to %s: %w", op, customer, p.topic, p.kc.Explain(err))
	}
	return nil
}

// Close flushes and closes the writer.
func (p *Publisher) Close() error {
	if err := cluster.CloseWriter(p.w); err != nil {
		return fmt.Errorf("close publisher: %w", err)
	}
	return nil
}
