// Package throttletest starts an in-process Kafka-protocol broker (kfake) and Schema
// Registry (srfake behind package registry, which checks compatibility and, with a
// DataDir, keeps the schemas in the broker) on loopback, so tests of every module talk
// to real sockets with the real clients. Either half can be stopped and started again
// on the same address, to test what Sluice does while the broker or the registry is
// away.
//
// With SLUICE_TEST_KAFKA=real (EnvBackend) the Kafka side is instead a real Apache
// Kafka cluster of three KRaft nodes, started once per test process and shared by its
// Stacks (see real.go); the same tests run on either.
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
	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest/kafkacluster"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest/registry"
)

// Options tune a Stack. The zero value is a one-broker cluster on a random loopback port,
// in memory.
type Options struct {
	// DataDir, when set, persists the broker's log there, so it survives StopBroker and
	// StartBroker. Without it a restarted broker starts empty. Real Kafka always keeps
	// its log across a restart, and ignores DataDir.
	//
	// With a DataDir (on kfake) the registry keeps its schemas in the broker's _schemas
	// topic too, so a new Stack on the same DataDir serves them with the same ids and
	// versions. Without one they live as long as the Stack: a broker that forgets its
	// log on restart would forget them anyway.
	DataDir string
	// KafkaPort and RegistryPort pin the listening ports (0: any free port). Real Kafka
	// picks its own ports: a KafkaPort is refused there.
	KafkaPort    int
	RegistryPort int
	// KafkaHost is the interface to listen on (default 127.0.0.1; kfake only).
	KafkaHost string
	// AdvertisedHost, when set, is the host the broker tells clients to connect to
	// (for serving containers on another network). Default: the listen address. kfake
	// only.
	AdvertisedHost string
	// RegistryHost is the interface the registry listens on (default 127.0.0.1).
	RegistryHost string
	// BrokerConfigs are passed to kfake (for example log.cleaner.backoff.ms to compact
	// on a timer). On real Kafka they are set as dynamic broker-wide defaults, which
	// only some configs can be, until the cluster is reset.
	BrokerConfigs map[string]string
}

// Stack is a running broker and registry.
type Stack struct {
	opts Options

	mu        sync.Mutex
	cluster   *kfake.Cluster
	kafkaAddr string

	registry *registry.Server
	regSrv   *http.Server
	regAddr  string

	// real is the shared real cluster when the backend is real Kafka (nil on kfake);
	// joined says this Stack still counts as one of its members.
	real      *kafkacluster.Cluster
	joined    bool
	startedIn time.Duration // how long this Stack waited for the real cluster to start
}

// New starts a stack. Close it when done.
func New(opts Options) (*Stack, error) {
	if err := checkBackend(); err != nil {
		return nil, err
	}
	s := &Stack{opts: opts}
	if Real() {
		if err := s.joinReal(); err != nil {
			return nil, err
		}
	} else if err := s.StartBroker(); err != nil {
		return nil, err
	}
	var ropts []registry.Option
	if opts.DataDir != "" && !Real() {
		ropts = append(ropts, registry.WithBrokers(s.Brokers()...))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reg, err := registry.New(ctx, ropts...)
	if err != nil {
		_ = s.close()
		return nil, fmt.Errorf("start registry: %w", err)
	}
	s.registry = reg
	if err := s.StartRegistry(); err != nil {
		_ = s.close()
		return nil, err
	}
	return s, nil
}

// Start starts a stack for a test and closes it when the test ends.
func Start(tb testing.TB, opts Options) *Stack {
	tb.Helper()
	s, err := New(opts)
	if err != nil {
		what := "in-process kafka"
		if Real() {
			what = "real kafka"
		}
		tb.Fatalf("start %s and registry: %v", what, err)
	}
	if s.startedIn > 0 {
		tb.Logf("real Kafka %s: 3 nodes up in %s (%s)", s.real.Version(), s.startedIn.Round(time.Millisecond), s.real.Dir())
	}
	tb.Cleanup(func() {
		if err := s.close(); err != nil {
			tb.Errorf("close stack: %v", err)
		}
	})
	return s
}

func (s *Stack) joinReal() error {
	if s.opts.KafkaPort != 0 || s.opts.KafkaHost != "" || s.opts.AdvertisedHost != "" {
		return fmt.Errorf("throttletest: KafkaPort, KafkaHost and AdvertisedHost are kfake's; %s=real picks its own", EnvBackend)
	}
	c, took, err := shared.join(s)
	if err != nil {
		return err
	}
	s.real, s.joined, s.startedIn = c, true, took
	if len(s.opts.BrokerConfigs) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.SetBrokerDefaults(ctx, s.opts.BrokerConfigs); err != nil {
			_ = s.close()
			return err
		}
	}
	return nil
}

// StartBroker starts the broker, on the address it had before if it ran already. On
// real Kafka it starts every stopped node and waits until each partition has a leader
// and the group coordinators answer.
func (s *Stack) StartBroker() error {
	if s.real != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := s.real.StartNodes(ctx); err != nil {
			return err
		}
		forgetConnections()
		if err := s.real.WaitLeaders(ctx, "", 1); err != nil {
			return err
		}
		return s.real.WaitGroupCoordinators(ctx)
	}
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
//
// On real Kafka it kills every node (SIGKILL: at once, and the log survives), after
// waiting to hold the shared cluster alone; the nodes start again with StartBroker or
// when the Stack closes.
func (s *Stack) StopBroker() {
	if s.real != nil {
		if err := shared.holdAlone(s); err != nil {
			panic(err) // no test can go on: the Stacks wait for each other
		}
		for _, id := range s.real.NodeIDs() {
			s.real.Kill(id)
		}
		return
	}
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

// Close stops both. On real Kafka it leaves the shared cluster instead of stopping it.
func (s *Stack) Close() { _ = s.close() }

func (s *Stack) close() error {
	s.StopRegistry()
	if s.registry != nil {
		s.registry.Close()
	}
	if s.real == nil {
		s.StopBroker()
		return nil
	}
	s.mu.Lock()
	joined := s.joined
	s.joined = false
	s.mu.Unlock()
	if !joined {
		return nil
	}
	return shared.leave(s)
}

// Nodes returns the real cluster, to stop, kill and start its nodes and wait for
// leaders; from then until it closes, the Stack holds the cluster alone (other Stacks
// of the process wait). It fails the test on kfake: see RequireReal.
func (s *Stack) Nodes(tb testing.TB) *kafkacluster.Cluster {
	tb.Helper()
	if s.real == nil {
		tb.Fatalf("Nodes needs real Kafka (%s=real): call RequireReal first", EnvBackend)
	}
	if err := shared.holdAlone(s); err != nil {
		tb.Fatal(err)
	}
	return s.real
}

// Brokers returns the broker's address (every node's, on real Kafka).
func (s *Stack) Brokers() []string {
	if s.real != nil {
		return s.real.Brokers()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return []string{s.kafkaAddr}
}

// Kafka returns a cluster.Config for the broker.
func (s *Stack) Kafka() cluster.Config {
	return cluster.Config{Brokers: s.Brokers(), ClientID: "throttletest"}
}

// RegistryURL returns the registry's base URL.
func (s *Stack) RegistryURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "http://" + s.regAddr
}

// Registry returns the in-memory registry behind the server, for seeding schemas
// directly: what is written through it is neither checked for compatibility nor stored
// in the broker. Register over HTTP (RegistryURL) for both.
func (s *Stack) Registry() *srfake.Registry { return s.registry.Fake() }

// Cluster returns the running kfake cluster (nil while stopped, and on real Kafka:
// tests that need it call RequireKfake).
func (s *Stack) Cluster() *kfake.Cluster {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cluster
}

// Compact runs log compaction on every compacted topic now. Real Kafka cannot be told
// to: its cleaner runs every half second on segments that are no longer active, with
// the topic's lag and ratio settings, so Compact does nothing there.
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
	if s.real != nil { // kfake's topics are ready at once; a real one's leaders are elected
		if err := s.real.WaitLeaders(ctx, name, 0); err != nil {
			tb.Fatalf("create topic %s: %v", name, err)
		}
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
