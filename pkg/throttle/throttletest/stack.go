// Package throttletest starts an in-process Kafka-protocol broker (kfake) and Schema
// Registry (srfake) on loopback, so tests of every module talk to real sockets with the
// real clients. Either half can be stopped and started again on the same address, to
// test what Sluice does while the broker or the registry is away.
package throttletest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

// Options tune a Stack. The zero value is a one-broker cluster on a random loopback port,
// in memory.
type Options struct {
	// DataDir, when set, persists the broker's log there, so it survives StopBroker and
	// StartBroker. Without it a restarted broker starts empty.
	DataDir string
	// KafkaPort and RegistryPort pin the listening ports (0: any free port).
	KafkaPort    int
	RegistryPort int
	// KafkaHost is the interface to listen on (default 127.0.0.1).
	KafkaHost string
	// AdvertisedHost, when set, is the host the broker tells clients to connect to
	// (for serving containers on another network). Default: the listen address.
	AdvertisedHost string
	// RegistryHost is the interface the registry listens on (default 127.0.0.1).
	RegistryHost string
	// BrokerConfigs are passed to kfake (for example log.cleaner.backoff.ms to compact
	// on a timer).
	BrokerConfigs map[string]string
}

// Stack is a running broker and registry.
type Stack struct {
	opts Options

	mu        sync.Mutex
	cluster   *kfake.Cluster
	kafkaAddr string

	registry *srfake.Registry
	regSrv   *http.Server
	regAddr  string
}

// New starts a stack. Close it when done.
func New(opts Options) (*Stack, error) {
	s := &Stack{opts: opts, registry: srfake.NewRegistry()}
	if err := s.StartBroker(); err != nil {
		return nil, err
	}
	if err := s.StartRegistry(); err != nil {
		s.StopBroker()
		return nil, err
	}
	return s, nil
}

// Start starts a stack for a test and closes it when the test ends.
func Start(tb testing.TB, opts Options) *Stack {
	tb.Helper()
	s, err := New(opts)
	if err != nil {
		tb.Fatalf("start in-process kafka and registry: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// StartBroker starts the broker, on the address it had before if it ran already.
func (s *Stack) StartBroker() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cluster != nil {
		return nil
	}
	host := s.opts.KafkaHost
	if host == "" {
		host = "127.0.0.1"
	}
	port := s.opts.KafkaPort
	if s.kafkaAddr != "" {
		_, p, _ := net.SplitHostPort(s.kafkaAddr)
		port, _ = strconv.Atoi(p)
	}
	kopts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			ln, err := listenRetry(network, net.JoinHostPort(host, strconv.Itoa(port)))
			if err != nil || s.opts.AdvertisedHost == "" {
				return ln, err
			}
			return advertised{ln, s.opts.AdvertisedHost}, nil
		}),
	}
	if s.opts.DataDir != "" {
		kopts = append(kopts, kfake.DataDir(s.opts.DataDir))
	}
	if len(s.opts.BrokerConfigs) > 0 {
		kopts = append(kopts, kfake.BrokerConfigs(s.opts.BrokerConfigs))
	}
	c, err := kfake.NewCluster(kopts...)
	if err != nil {
		return fmt.Errorf("start kfake: %w", err)
	}
	s.cluster = c
	s.kafkaAddr = c.ListenAddrs()[0]
	return nil
}

// listenRetry binds addr, retrying briefly: a port just released by a stopped broker can
// take a moment to become free again.
func listenRetry(network, addr string) (net.Listener, error) {
	var err error
	for range 50 {
		var ln net.Listener
		if ln, err = net.Listen(network, addr); err == nil {
			return ln, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, err
}

// advertised makes a listener report another host (same port) as its address, which is
// what kfake advertises to clients.
type advertised struct {
	net.Listener
	host string
}

func (a advertised) Addr() net.Addr { return advAddr{a.Listener.Addr(), a.host} }

type advAddr struct {
	net.Addr
	host string
}

func (a advAddr) String() string {
	_, port, _ := net.SplitHostPort(a.Addr.String())
	return net.JoinHostPort(a.host, port)
}

// StopBroker stops the broker. Clients see connections refused until StartBroker.
func (s *Stack) StopBroker() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cluster != nil {
		s.cluster.Close()
		s.cluster = nil
	}
}

// StartRegistry starts the registry, on the address it had before if it ran already.
// Its schemas survive a stop.
func (s *Stack) StartRegistry() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.regSrv != nil {
		return nil
	}
	addr := s.regAddr
	if addr == "" {
		host := s.opts.RegistryHost
		if host == "" {
			host = "127.0.0.1"
		}
		addr = net.JoinHostPort(host, strconv.Itoa(s.opts.RegistryPort))
	}
	ln, err := listenRetry("tcp", addr)
	if err != nil {
		return fmt.Errorf("start registry on %s: %w", addr, err)
	}
	s.regAddr = ln.Addr().String()
	srv := &http.Server{Handler: s.registry.Handler(), ReadHeaderTimeout: 5 * time.Second}
	s.regSrv = srv
	go func() { _ = srv.Serve(ln) }() // Serve returns when StopRegistry closes srv
	return nil
}

// StopRegistry stops the registry: requests to it fail until StartRegistry.
func (s *Stack) StopRegistry() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.regSrv != nil {
		_ = s.regSrv.Close()
		s.regSrv = nil
	}
}

// Close stops both.
func (s *Stack) Close() {
	s.StopRegistry()
	s.StopBroker()
}

// Brokers returns the broker's address.
func (s *Stack) Brokers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return []string{s.kafkaAddr}
}

// Kafka returns a KafkaConfig for the broker.
func (s *Stack) Kafka() throttle.KafkaConfig {
	return throttle.KafkaConfig{Brokers: s.Brokers(), ClientID: "throttletest"}
}

// RegistryURL returns the registry's base URL.
func (s *Stack) RegistryURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "http://" + s.regAddr
}

// Registry returns the fake registry, for seeding schemas directly.
func (s *Stack) Registry() *srfake.Registry { return s.registry }

// Cluster returns the running kfake cluster (nil while stopped).
func (s *Stack) Cluster() *kfake.Cluster {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cluster
}

// Compact runs log compaction on every compacted topic now.
func (s *Stack) Compact() {
	if c := s.Cluster(); c != nil {
		c.Compact()
	}
}

// Codec returns a codec for topic against this registry.
func (s *Stack) Codec(tb testing.TB, topic string) *throttle.Codec {
	tb.Helper()
	c, err := throttle.NewCodec(throttle.RegistryConfig{URL: s.RegistryURL(), Timeout: time.Second}, topic)
	if err != nil {
		tb.Fatalf("new codec: %v", err)
	}
	return c
}

// CreateTopic creates the compacted throttle topic with n partitions for a test.
func (s *Stack) CreateTopic(tb testing.TB, name string, partitions int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := throttle.EnsureTopic(ctx, s.Kafka(), throttle.TopicSpec{Name: name, Partitions: partitions})
	if err != nil {
		tb.Fatalf("create topic %s: %v", name, err)
	}
}

// Produce writes raw messages as they are (keys, values, partitions chosen by the
// caller), synchronously, bypassing every check of the Publisher: for poison records and
// hand-made logs.
func (s *Stack) Produce(ctx context.Context, topic string, msgs ...kafka.Message) error {
	// A transport of its own: kafka-go's default one caches metadata for seconds, and a
	// test that adds partitions must see them.
	tr := &kafka.Transport{MetadataTTL: 50 * time.Millisecond}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{
		Transport:    tr,
		Addr:         kafka.TCP(s.Brokers()...),
		Topic:        topic,
		RequiredAcks: kafka.RequireAll,
		Balancer:     partitionOf{},
		BatchTimeout: time.Millisecond,
		BatchSize:    1000,
	}
	defer w.Close()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("produce %d messages to %s: %w", len(msgs), topic, err)
	}
	return nil
}

// MustProduce is Produce that fails the test on error.
func (s *Stack) MustProduce(tb testing.TB, topic string, msgs ...kafka.Message) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Produce(ctx, topic, msgs...); err != nil {
		tb.Fatal(err)
	}
}

// partitionOf sends each message to the partition it names (Message.Partition is
// otherwise ignored by kafka.Writer); for messages that leave it 0, that is partition 0.
type partitionOf struct{}

func (partitionOf) Balance(msg kafka.Message, partitions ...int) int {
	for _, p := range partitions {
		if p == msg.Partition {
			return p
		}
	}
	return partitions[0]
}

// ErrStopped is returned by helpers that need a running broker.
var ErrStopped = errors.New("throttletest: broker stopped")
