package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/follow"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
)

// result is what one in-process run of throttlectl left behind.
type result struct {
	code           int
	stdout, stderr string
}

// invoke runs throttlectl in-process with stdin.
func invoke(t *testing.T, ctx context.Context, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(ctx, args, strings.NewReader(stdin), &out, &errb)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// testCluster is an in-process broker and registry with one throttle topic.
type testCluster struct {
	t     *testing.T
	s     *throttletest.Stack
	topic string
	codec *throttle.Codec
}

func newCluster(t *testing.T, partitions int) *testCluster {
	t.Helper()
	s := throttletest.Start(t, throttletest.Options{})
	c := &testCluster{t: t, s: s, topic: topicName(t, "")}
	s.CreateTopic(t, c.topic, partitions)
	c.codec = s.Codec(t, c.topic)
	return c
}

func topicName(t *testing.T, suffix string) string {
	b := []byte("throttles-" + t.Name() + suffix)
	for i, ch := range b {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '.') {
			b[i] = '-'
		}
	}
	return string(b)
}

// flags are the connection flags for this cluster and topic.
func (c *testCluster) flags(topic string) []string {
	if topic == "" {
		topic = c.topic
	}
	return []string{"--brokers", strings.Join(c.s.Brokers(), ","), "--registry", c.s.RegistryURL(), "--topic", topic, "--timeout", "20s"}
}

// run runs a command against the cluster's topic: throttlectl CMD <connection flags> ARGS.
func (c *testCluster) run(cmd string, args ...string) result {
	c.t.Helper()
	return c.runIn(c.topic, "", cmd, args...)
}

func (c *testCluster) runIn(topic, stdin, cmd string, args ...string) result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.t.Context(), 60*time.Second)
	defer cancel()
	return invoke(c.t, ctx, stdin, append(append([]string{cmd}, c.flags(topic)...), args...)...)
}

// mustRun is run that fails the test unless the command exits 0.
func (c *testCluster) mustRun(cmd string, args ...string) result {
	c.t.Helper()
	r := c.run(cmd, args...)
	if r.code != exitOK {
		c.t.Fatalf("throttlectl %s %q: got exit %d, want 0; stderr:\n%s", cmd, args, r.code, r.stderr)
	}
	return r
}

func (c *testCluster) msg(partition int, r throttle.Record) kafka.Message {
	c.t.Helper()
	b, err := c.codec.Encode(&r)
	if err != nil {
		c.t.Fatal(err)
	}
	return kafka.Message{Partition: partition, Key: []byte(r.Customer), Value: b}
}

func (c *testCluster) put(topic string, msgs ...kafka.Message) {
	c.t.Helper()
	c.s.MustProduce(c.t, topic, msgs...)
}

// publish writes records with a Publisher, as processing would: each lands on its
// customer's partition.
func (c *testCluster) publish(topic string, recs ...throttle.Record) {
	c.t.Helper()
	p, err := throttle.NewPublisher(c.s.Kafka(), topic, c.s.Codec(c.t, topic))
	if err != nil {
		c.t.Fatal(err)
	}
	defer p.Close()
	for _, r := range recs {
		if err := p.Set(c.t.Context(), r); err != nil {
			c.t.Fatal(err)
		}
	}
}

// active rebuilds a table of topic, as an ingestion replica would, and returns its
// active throttles.
func (c *testCluster) active(topic string) []throttle.Record {
	c.t.Helper()
	tb, err := throttle.NewTable(c.s.Kafka(), topic, c.s.Codec(c.t, topic), throttle.WithRead(follow.WithPollInterval(50*time.Millisecond)), throttle.WithRead(follow.WithStallTimeout(time.Second)))
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(c.t.Context())
	done := make(chan struct{})
	go func() { defer close(done); _ = tb.Run(ctx) }()
	defer func() { cancel(); <-done }()
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := tb.WaitReady(wctx); err != nil {
		c.t.Fatalf("table of %s never ready: %v", topic, err)
	}
	return tb.Active()
}

func rec(customer string, limit int64, ttl time.Duration) throttle.Record {
	now := time.Now().UTC().Truncate(time.Millisecond)
	return throttle.Record{
		ID: uuid.NewString(), Customer: customer, Limit: limit,
		Window: time.Minute, CreatedAt: now, ExpiresAt: now.Add(ttl),
		Reason: throttle.Reason{Kind: throttle.ReasonManual, Note: "test"}, SetBy: "test",
	}
}

// aged is r created and expiring d earlier.
func aged(r throttle.Record, d time.Duration) throttle.Record {
	r.CreatedAt, r.ExpiresAt = r.CreatedAt.Add(-d), r.ExpiresAt.Add(-d)
	return r
}

func tomb(partition int, customer string, headers ...kafka.Header) kafka.Message {
	return kafka.Message{Partition: partition, Key: []byte(customer), Headers: headers}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// jsonLines decodes every line of s into a T.
func jsonLines[T any](t *testing.T, s string) []T {
	t.Helper()
	var out []T
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		if line == "" {
			continue
		}
		var v T
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		out = append(out, v)
	}
	return out
}

// syncBuffer is a bytes.Buffer a test can read while a command writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
