package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// DefaultTopic is where the registry keeps its schemas, as Confluent's does.
const DefaultTopic = "_schemas"

// The records of the topic use Confluent's layout (JSON keys and values), so that a
// glance at the topic reads as it would on a real registry's.
type (
	schemaKey struct {
		KeyType string `json:"keytype"` // SCHEMA
		Subject string `json:"subject"`
		Version int    `json:"version"`
		Magic   int    `json:"magic"`
	}
	configKey struct {
		KeyType string  `json:"keytype"` // CONFIG
		Subject *string `json:"subject"` // null: the global level
		Magic   int     `json:"magic"`
	}
	noopKey struct {
		KeyType string `json:"keytype"` // NOOP
		Magic   int    `json:"magic"`
	}
	anyKey struct {
		KeyType string  `json:"keytype"`
		Subject *string `json:"subject"`
		Version int     `json:"version"`
	}
	schemaValue struct {
		Subject    string      `json:"subject"`
		Version    int         `json:"version"`
		ID         int         `json:"id"`
		SchemaType string      `json:"schemaType,omitempty"` // omitted for AVRO, as Confluent does
		References []reference `json:"references,omitempty"`
		Schema     string      `json:"schema"`
		Deleted    bool        `json:"deleted"`
	}
	reference struct {
		Name    string `json:"name"`
		Subject string `json:"subject"`
		Version int    `json:"version"`
	}
	configValue struct {
		CompatibilityLevel string `json:"compatibilityLevel"`
	}
)

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain structs are marshalled
	}
	return b
}

// store writes the registry's changes to one partition of a compacted topic and reads
// them back at start.
type store struct {
	brokers []string
	opts    []kgo.Opt // TLS, SASL
	topic   string
	timeout time.Duration // of one write
	cl      *kgo.Client   // the writer
}

// openStore connects to the topic; create makes it when it is missing (a follower
// waits for the mirror to make it instead).
func openStore(ctx context.Context, brokers []string, opts []kgo.Opt, topic string, timeout time.Duration, create bool) (*store, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// One partition: the order of the records is the order of the registrations,
		// which the replay relies on.
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		// A registration waits for its record; with the broker away it must fail within
		// the request, and an idempotent producer does not give up on a record it may
		// have sent. A record written twice is harmless: the replay skips the copy.
		kgo.DisableIdempotentWrite(),
		kgo.RecordDeliveryTimeout(timeout),
	}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("registry store on %v: %w", brokers, err)
	}
	st := &store{brokers: brokers, opts: opts, topic: topic, timeout: timeout, cl: cl}
	if !create {
		return st, nil
	}
	if err := st.ensureTopic(ctx); err != nil {
		cl.Close()
		return nil, err
	}
	return st, nil
}

func (st *store) close() { st.cl.Close() }

// ensureTopic creates the topic (one partition, compacted) unless it exists.
func (st *store) ensureTopic(ctx context.Context) error {
	req := kmsg.NewPtrCreateTopicsRequest()
	req.TimeoutMillis = 10_000
	t := kmsg.NewCreateTopicsRequestTopic()
	t.Topic = st.topic
	t.NumPartitions = 1
	t.ReplicationFactor = -1 // the broker's default
	cp := kmsg.NewCreateTopicsRequestTopicConfig()
	cp.Name, cp.Value = "cleanup.policy", kmsg.StringPtr("compact")
	t.Configs = append(t.Configs, cp)
	req.Topics = append(req.Topics, t)
	resp, err := req.RequestWith(ctx, st.cl)
	if err != nil {
		return fmt.Errorf("create topic %s: %w", st.topic, err)
	}
	for _, rt := range resp.Topics {
		if err := kerr.ErrorForCode(rt.ErrorCode); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", st.topic, err)
		}
	}
	return nil
}

// put writes one record and waits for the broker to acknowledge it. A nil value is a
// tombstone.
func (st *store) put(ctx context.Context, key, value []byte) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, st.timeout)
	defer cancel()
	r, err := st.cl.ProduceSync(ctx, &kgo.Record{Key: key, Value: value, Partition: 0}).First()
	if err != nil {
		return 0, fmt.Errorf("write %s to %s: %w", key, st.topic, err)
	}
	return r.Offset, nil
}

// reader is a client that reads the topic's only partition from its start.
func (st *store) reader() (*kgo.Client, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(st.brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{st.topic: {0: kgo.NewOffset().AtStart()}}),
	}, st.opts...)...)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", st.topic, err)
	}
	return cl, nil
}

// replay passes every record of the topic to apply, in order. Like Confluent's
// registry, it first writes a NOOP record and reads until it has read that one: the
// offset it got back is proof that everything before it was read, whatever gaps
// compaction left.
func (st *store) replay(ctx context.Context, apply func(*kgo.Record) error) error {
	end, err := st.put(ctx, mustJSON(noopKey{KeyType: "NOOP"}), nil)
	if err != nil {
		return err
	}
	cl, err := st.reader()
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read %s up to offset %d: %w", st.topic, end, err)
		}
		var done bool
		var applyErr error
		fs.EachError(func(_ string, _ int32, err error) {
			// Fetch errors are retried by the client; only fatal ones reach here.
			if applyErr == nil {
				applyErr = fmt.Errorf("read %s: %w", st.topic, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			if done || applyErr != nil {
				return
			}
			if r.Offset >= end {
				done = true
				return
			}
			if err := apply(r); err != nil {
				applyErr = fmt.Errorf("replay %s at offset %d (key %s): %w", st.topic, r.Offset, r.Key, err)
			}
		})
		if applyErr != nil {
			return applyErr
		}
		if done {
			return nil
		}
	}
}
