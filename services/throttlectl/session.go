package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/pkg/throttle/follow"
)

// session is what a command works with once its command line is parsed.
type session struct {
	cfg            config
	stdin          io.Reader
	stdout, stderr io.Writer
	log            *zap.Logger
	json           bool
	now            func() time.Time
}

func (s *session) topic() string { return s.cfg.ThrottleTopic }

func (s *session) kafka() (cluster.Config, error) {
	kc, err := s.cfg.Kafka("throttlectl")
	if err != nil {
		return kc, fmt.Errorf("kafka configuration: %w", err)
	}
	return kc, nil
}

// codec returns a codec for topic for readers (tables, scans): they retry a registry
// request that fails until the command's deadline, so each request keeps the bound of
// SCHEMA_REGISTRY_TIMEOUT, and a registry that never answers is counted and named.
func (s *session) codec(topic string) (*throttle.Codec, error) {
	return s.newCodec(s.cfg.Registry(), topic)
}

// writeCodec returns a codec for topic for a publish, which fails at its first registry
// error: its requests may take the time ctx has left (the command's deadline) instead of
// SCHEMA_REGISTRY_TIMEOUT (5s by default), which would end the command early.
func (s *session) writeCodec(ctx context.Context, topic string) (*throttle.Codec, error) {
	rc := s.cfg.Registry()
	if left, ok := timeLeft(ctx); ok {
		rc.Timeout = left
	}
	return s.newCodec(rc, topic)
}

func (s *session) newCodec(rc throttle.RegistryConfig, topic string) (*throttle.Codec, error) {
	c, err := throttle.NewCodec(rc, topic)
	if err != nil {
		return nil, fmt.Errorf("schema registry %s: %w", s.cfg.RegistryURL, err)
	}
	return c, nil
}

// newClient returns a kafka-go client for kc whose requests end at ctx's deadline (the
// command's), and the function that closes its connections.
//
// kafka-go does not bound a request by its context alone. The transport connects to a
// broker (TCP, TLS, API versions, SASL) under its own DialTimeout (5s from
// cluster.Config.Transport), on its own context for the first connection, and asks for the
// cluster's metadata under MetadataTTL (10s); a broker that accepts connections and never
// answers would end the command there, with "i/o timeout", whatever --timeout says. So
// the transport runs on ctx and both bounds are stretched to the time ctx has left.
func newClient(ctx context.Context, kc cluster.Config) (*kafka.Client, func()) {
	tr := kc.Transport()
	if left, ok := timeLeft(ctx); ok {
		tr.Context = ctx
		tr.DialTimeout = left
		tr.MetadataTTL = max(tr.MetadataTTL, left)
	}
	return &kafka.Client{Addr: kafka.TCP(kc.Brokers...), Transport: tr}, tr.CloseIdleConnections
}

// ended reports whether ctx is done or its deadline has passed: a connection whose
// deadline is ctx's can report its i/o timeout a moment before ctx's own timer fires.
func ended(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

// timeLeft is the time until ctx's deadline, at least a millisecond (a zero would select
// a library's default); false when ctx has no deadline.
func timeLeft(ctx context.Context) (time.Duration, bool) {
	d, ok := ctx.Deadline()
	if !ok {
		return 0, false
	}
	return max(time.Until(d), time.Millisecond), true
}

// unreachable names the brokers in the error of the first request to them, so the
// operator sees at once which address did not answer.
func (s *session) unreachable(ctx context.Context, kc cluster.Config, topic string, err error) error {
	brokers := strings.Join(kc.Brokers, ",")
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || ended(ctx):
		return fmt.Errorf("kafka brokers %s unreachable within the %s timeout: %w", brokers, s.cfg.Timeout, err)
	case errors.As(err, &ne):
		return fmt.Errorf("kafka brokers %s unreachable: %w", brokers, err)
	}
	return fmt.Errorf("kafka brokers %s: metadata of topic %s: %w", brokers, topic, err)
}

// checkTopic makes sure topic exists and is compacted before a command uses it, so the
// operator reads the cause instead of waiting for a table that never catches up (a Table
// retries a missing topic forever) or a write that fails after its retries. It returns
// the topic's partitions. A topic that is not compacted gives an error wrapping
// throttle.ErrNotCompacted, with the partitions.
func (s *session) checkTopic(ctx context.Context, kc cluster.Config, topic string) ([]int, error) {
	cl, done := newClient(ctx, kc)
	defer done()
	meta, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, s.unreachable(ctx, kc, topic, err)
	}
	var parts []int
	for _, t := range meta.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil && !errors.Is(t.Error, kafka.UnknownTopicOrPartition) {
			return nil, fmt.Errorf("metadata of topic %s: %w", topic, t.Error)
		}
		for _, p := range t.Partitions {
			parts = append(parts, p.ID)
		}
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("topic %s does not exist; create it with throttlectl ensure-topic", topic)
	}
	resp, err := cl.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: []string{"cleanup.policy"},
	}}})
	if err != nil {
		return nil, fmt.Errorf("describe configs of topic %s: %w", topic, err)
	}
	policy, found := "", false
	for _, r := range resp.Resources {
		if r.Error != nil {
			return nil, fmt.Errorf("describe configs of topic %s: %w", topic, r.Error)
		}
		for _, e := range r.ConfigEntries {
			if e.ConfigName == "cleanup.policy" {
				policy, found = e.ConfigValue, true
			}
		}
	}
	if !found {
		return nil, fmt.Errorf("describe configs of topic %s: cleanup.policy not returned", topic)
	}
	// Exactly "compact", as EnsureTopic demands: "compact,delete" still drops throttles by
	// age.
	if policy != "compact" {
		return parts, fmt.Errorf("%w: topic %s has cleanup.policy=%q, want \"compact\"; Sluice refuses it because the broker would delete throttles by age",
			throttle.ErrNotCompacted, topic, policy)
	}
	return parts, nil
}

// readTable checks the topic, rebuilds a table of it from offset zero and returns it once
// caught up, with the function that stops it. Extra options come after the tool's own.
func (s *session) readTable(ctx, readyCtx context.Context, opts ...throttle.Option) (*throttle.Table, func(), error) {
	kc, err := s.kafka()
	if err != nil {
		return nil, nil, err
	}
	if _, err := s.checkTopic(readyCtx, kc, s.topic()); err != nil {
		return nil, nil, err
	}
	codec, err := s.codec(s.topic())
	if err != nil {
		return nil, nil, err
	}
	opts = append([]throttle.Option{
		throttle.WithLogger(s.log),
		// A tool waits for readiness: look for progress often, and give up on a reader
		// that stopped below the end (a compacted-away tail) after a second, not ten.
		throttle.WithRead(follow.WithPollInterval(100 * time.Millisecond)),
		throttle.WithRead(follow.WithStallTimeout(time.Second)),
		throttle.WithRead(follow.WithBackoff(50*time.Millisecond, time.Second)),
	}, opts...)
	tb, err := throttle.NewTable(kc, s.topic(), codec, opts...)
	if err != nil {
		return nil, nil, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tb.Run(runCtx) // nil on cancellation; it retries everything else
	}()
	stop := func() { cancel(); <-done }
	if err := tb.WaitReady(readyCtx); err != nil {
		err = s.notReady(tb, kc, err)
		stop()
		return nil, nil, err
	}
	s.warnPoison(tb)
	return tb, stop, nil
}

// warnPoison says how many records the table skipped as poison: its log lines for them
// may have been sampled away.
func (s *session) warnPoison(tb *throttle.Table) {
	var total int64
	var kinds []string
	poison := tb.Stats().Poison
	for _, reason := range sortedKeys(poison) {
		if n := poison[reason]; n > 0 {
			total += n
			kinds = append(kinds, fmt.Sprintf("%s=%d", reason, n))
		}
	}
	if total > 0 {
		fmt.Fprintf(s.stderr, "warning: skipped %d poison records of topic %s (%s); throttlectl dump shows them\n",
			total, s.topic(), strings.Join(kinds, " "))
	}
}

// notReady explains why a table did not catch up in time: the Table retries broker and
// registry failures forever, so the cause is in its figures.
func (s *session) notReady(tb *throttle.Table, kc cluster.Config, err error) error {
	st := tb.Stats()
	switch {
	case st.RegistryRetries > 0:
		return registryDown{fmt.Errorf("schema registry %s unreachable: %d attempts to decode a record failed: %w",
			s.cfg.RegistryURL, st.RegistryRetries, err)}
	case !st.Fresh:
		return fmt.Errorf("kafka brokers %s unreachable while reading topic %s: %w", strings.Join(kc.Brokers, ","), s.topic(), err)
	}
	var behind []string
	for _, p := range st.Partitions {
		if !p.CaughtUp {
			behind = append(behind, fmt.Sprintf("%d at %d of %d", p.Partition, p.Position, p.End))
		}
	}
	return fmt.Errorf("topic %s not read to its end (partitions %s): %w", s.topic(), strings.Join(behind, ", "), err)
}

// registryDown marks an error whose cause is the schema registry.
type registryDown struct{ error }

func (e registryDown) Unwrap() error { return e.error }
