package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Ports inside the network.
const (
	kafkaPort      = "9092"
	registryPort   = "8081/tcp"
	processingPort = "8090/tcp"
	ingestionPort  = "8080/tcp"
	probePort      = "8099/tcp"
)

// Settings the scenarios are written against. Detection: a customer sending more than
// half of the last 10 s of events, once there are 100, is throttled to 20 events/s for a
// minute. The sweeper tombstones an expired throttle 1 s after its expiry.
const (
	autoLimit    = 20
	autoWindow   = time.Second
	autoDuration = time.Minute
	sweepGrace   = time.Second
	// compactEvery is how often the fake broker compacts (log.cleaner.backoff.ms).
	compactEvery = time.Second
)

// kafkaEnv is how every service of the stack reaches Kafka and creates its topics: on a
// cluster of three, replication factor 3 and min.insync.replicas 2, as in production.
func (s *stack) kafkaEnv() map[string]string {
	rf, isr := "1", "1"
	if len(s.brokers) >= 3 {
		rf, isr = "3", "2"
	}
	return map[string]string{
		"KAFKA_BROKERS":             s.bootstrap(),
		"TOPIC_REPLICATION_FACTOR":  rf,
		"TOPIC_MIN_INSYNC_REPLICAS": isr,
	}
}

// bootstrap is the brokers' addresses inside the network.
func (s *stack) bootstrap() string {
	addrs := make([]string, len(s.brokers))
	for i, b := range s.brokers {
		addrs[i] = b.name + ":" + kafkaPort
	}
	return strings.Join(addrs, ",")
}

// withEnv is base with more's variables added.
func withEnv(base map[string]string, more map[string]string) map[string]string {
	maps.Copy(base, more)
	return base
}

func processingEnv(token string) map[string]string {
	return map[string]string{
		"SCHEMA_REGISTRY_URL":     "http://registry:8081",
		"EVENTS_TOPIC_PARTITIONS": "3",
		"ADMIN_ADDR":              ":8090",
		"ADMIN_TOKEN":             token,
		"INSTANCE_ID":             "processing-1",
		"SHARE_WINDOW":            "10s",
		"SHARE_THRESHOLD":         "0.5",
		"MIN_EVENTS":              "100",
		"THROTTLE_LIMIT":          fmt.Sprint(autoLimit),
		"THROTTLE_WINDOW":         autoWindow.String(),
		"THROTTLE_DURATION":       autoDuration.String(),
		"RENEW_MARGIN":            "15s",
		"SWEEP_GRACE":             sweepGrace.String(),
		"COMMIT_INTERVAL":         "500ms",
		"AUDIT_INTERVAL":          "1s",
		"SHUTDOWN_TIMEOUT":        "5s",
		"LOG_LEVEL":               "info",
	}
}

func ingestionEnv(replica string) map[string]string {
	return map[string]string{
		"SCHEMA_REGISTRY_URL":     "http://registry:8081",
		"EVENTS_TOPIC_PARTITIONS": "3",
		"HTTP_ADDR":               ":8080",
		"REPLICA_ID":              replica,
		// Requests wait this long for Kafka before a 503: short, so that a scenario
		// with the broker away does not wait on them.
		"WRITE_TIMEOUT":    "3s",
		"AUDIT_INTERVAL":   "1s",
		"SHUTDOWN_TIMEOUT": "5s",
		"LOG_LEVEL":        "info",
	}
}

// node is one container of a stack.
type node struct {
	name string // network alias
	port string // the port the test talks to over HTTP ("" for none)
	c    *testcontainers.DockerContainer
	// readyLog is a line the program prints once it serves; starts counts the starts, so
	// that a restart waits for the line to appear once more.
	readyLog string
	starts   int
}

// url is the node's HTTP base URL from the host. Mapped ports change when a container
// is stopped and started, so it is read again each time.
func (n *node) url(ctx context.Context) (string, error) {
	return n.c.PortEndpoint(ctx, n.port, "http")
}

// mustURL is url for a test.
func (n *node) mustURL(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u, err := n.url(ctx)
	if err != nil {
		t.Fatalf("mapped port of %s: %v", n.name, err)
	}
	return u
}

// stack is one deployment of Sluice on its own network: broker, registry, processing,
// ingestion replicas, and the probe that reads and writes topics from inside.
type stack struct {
	name  string
	img   images
	net   *testcontainers.DockerNetwork
	token string

	// brokers are kafka-1, kafka-2 and kafka-3 of a real cluster, or the fake broker
	// (alias kafka) alone.
	brokers                     []*node
	registry, probe, processing *node

	// throttled is the customer enforced made: throttled, its events used up everywhere.
	throttled string

	mu        sync.Mutex
	extraNets []string // networks of the stack's own besides net, removed with it
	closed    bool
	ingestion []*node // the replicas in service
	all       []*node // every container ever started, for logs and removal
	replicas  int     // replica ids handed out
}

// startStack starts a stack with two ingestion replicas and waits until every part is
// ready.
func startStack(ctx context.Context, name string) (_ *stack, err error) {
	img, err := buildImages(ctx)
	if err != nil {
		return nil, err
	}
	nw, err := network.New(ctx, network.WithLabels(suiteLabels()))
	if err != nil {
		return nil, fmt.Errorf("create network: %w", err)
	}
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	s := &stack{name: name, img: img, net: nw, token: hex.EncodeToString(tok)}
	defer func() {
		if err != nil {
			s.close(context.WithoutCancel(ctx))
		}
	}()

	if s.brokers, err = s.startKafka(ctx); err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	var regErr, probeErr error
	wg.Go(func() { s.registry, regErr = s.startRegistry(ctx) })
	wg.Go(func() { s.probe, probeErr = s.startProbe(ctx) })
	wg.Wait()
	if err := errors.Join(regErr, probeErr); err != nil {
		return nil, err
	}
	if s.processing, err = s.startProcessing(ctx); err != nil {
		return nil, err
	}
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() {
			n, err := s.startIngestion(ctx, untilReady)
			errs[i] = err
			if err == nil {
				s.mu.Lock()
				s.ingestion = append(s.ingestion, n)
				s.mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// run creates and starts a container on the stack's network under alias.
// More networks may follow: the container joins them under the same alias.
func (s *stack) run(ctx context.Context, alias, port, readyLog string, req testcontainers.ContainerRequest, more ...string) (*node, error) {
	req.Networks = append([]string{s.net.Name}, more...)
	req.NetworkAliases = map[string][]string{}
	for _, n := range req.Networks {
		req.NetworkAliases[n] = []string{alias}
	}
	req.Labels = suiteLabels()
	if port != "" {
		req.ExposedPorts = append(req.ExposedPorts, port)
	}
	c, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{
		ContainerRequest: req, Started: true, Logger: logger(),
	})
	n := &node{name: alias, port: port, readyLog: readyLog, starts: 1}
	if c != nil {
		n.c = c.(*testcontainers.DockerContainer)
		s.mu.Lock()
		s.all = append(s.all, n)
		s.mu.Unlock()
	}
	if err != nil {
		return nil, fmt.Errorf("start %s (%s): %w%s", alias, req.Image, err, n.logTail(ctx, 20))
	}
	return n, nil
}

// kafkaReady is the line a Kafka node prints once it serves, in the official image and
// in deploy/kafka/image alike.
const kafkaReady = "Kafka Server started"

func (s *stack) startKafka(ctx context.Context) ([]*node, error) {
	if s.img.fakeKafka {
		const ready = "Kafka broker listening"
		n, err := s.run(ctx, "kafka", "", ready, testcontainers.ContainerRequest{
			Image: s.img.kafka,
			Cmd: []string{"-mode", "broker", "-host", "0.0.0.0", "-advertised-host", "kafka",
				"-kafka-port", kafkaPort, "-compact-every", compactEvery.String()},
			WaitingFor: wait.ForLog(ready).WithStartupTimeout(time.Minute),
		})
		return []*node{n}, err
	}
	// Three KRaft nodes, each broker and controller, configured through KAFKA_*
	// variables as the official image documents. Their logs live in the containers, so
	// they survive a stop and a start of the same container. They start together: none
	// is ready before a quorum is.
	const nodes = 3
	voters := make([]string, nodes)
	for i := range voters {
		voters[i] = fmt.Sprintf("%d@kafka-%d:9093", i+1, i+1)
	}
	brokers := make([]*node, nodes)
	errs := make([]error, nodes)
	var wg sync.WaitGroup
	for i := range brokers {
		alias := fmt.Sprintf("kafka-%d", i+1)
		wg.Go(func() {
			brokers[i], errs[i] = s.run(ctx, alias, "", kafkaReady, testcontainers.ContainerRequest{
				Image:      s.img.kafka,
				Env:        kafkaNodeEnv(i+1, alias, strings.Join(voters, ",")),
				WaitingFor: wait.ForLog(kafkaReady).WithStartupTimeout(3 * time.Minute),
			})
		})
	}
	wg.Wait()
	return brokers, errors.Join(errs...)
}

// kafkaNodeEnv configures node id of a three-node cluster: replication factor 3 and
// min.insync.replicas 2 for every topic, the internal ones included; a lost node fenced
// within seconds; the log cleaner waking every compactEvery, so that compaction is seen
// within a scenario; small heaps, since three JVMs share the machine with the services.
func kafkaNodeEnv(id int, alias, voters string) map[string]string {
	return map[string]string{
		"CLUSTER_ID":                                         "FmUWFi27TnuoopFwNDU26w",
		"KAFKA_NODE_ID":                                      fmt.Sprint(id),
		"KAFKA_PROCESS_ROLES":                                "broker,controller",
		"KAFKA_LISTENERS":                                    "PLAINTEXT://:9092,CONTROLLER://:9093",
		"KAFKA_ADVERTISED_LISTENERS":                         "PLAINTEXT://" + alias + ":9092",
		"KAFKA_CONTROLLER_LISTENER_NAMES":                    "CONTROLLER",
		"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP":               "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
		"KAFKA_CONTROLLER_QUORUM_VOTERS":                     voters,
		"KAFKA_INTER_BROKER_LISTENER_NAME":                   "PLAINTEXT",
		"KAFKA_LOG_DIRS":                                     "/var/lib/kafka/data",
		"KAFKA_DEFAULT_REPLICATION_FACTOR":                   "3",
		"KAFKA_MIN_INSYNC_REPLICAS":                          "2",
		"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":             "3",
		"KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS":                 "5",
		"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR":     "3",
		"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":                "2",
		"KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS":         "5",
		"KAFKA_SHARE_COORDINATOR_STATE_TOPIC_NUM_PARTITIONS": "5",
		"KAFKA_AUTO_CREATE_TOPICS_ENABLE":                    "false",
		"KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE":               "false",
		"KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS":             "0",
		"KAFKA_BROKER_HEARTBEAT_INTERVAL_MS":                 "500",
		"KAFKA_BROKER_SESSION_TIMEOUT_MS":                    "4000",
		"KAFKA_REPLICA_LAG_TIME_MAX_MS":                      "10000",
		"KAFKA_LOG_CLEANER_BACKOFF_MS":                       fmt.Sprint(compactEvery.Milliseconds()),
		"KAFKA_LOG_INITIAL_TASK_DELAY_MS":                    "0",
		"KAFKA_NUM_NETWORK_THREADS":                          "2",
		"KAFKA_NUM_IO_THREADS":                               "2",
		"KAFKA_BACKGROUND_THREADS":                           "2",
		"KAFKA_LOG4J_ROOT_LOGLEVEL":                          "INFO",
		"KAFKA_HEAP_OPTS":                                    "-Xms64m -Xmx384m",
		// One GC thread and the quick compiler: startup, not peak throughput, is what
		// the scenarios wait for.
		"KAFKA_JVM_PERFORMANCE_OPTS": "-XX:+UseSerialGC -XX:TieredStopAtLevel=1",
	}
}

// broker returns the node of broker id.
func (s *stack) broker(id int) *node {
	if len(s.brokers) == 1 {
		return s.brokers[0]
	}
	return s.brokers[id-1]
}

func (s *stack) startRegistry(ctx context.Context) (*node, error) {
	wf := wait.ForHTTP("/subjects").WithPort(registryPort).WithStartupTimeout(3 * time.Minute)
	if s.img.fakeRegistry {
		return s.run(ctx, "registry", registryPort, "Schema Registry listening", testcontainers.ContainerRequest{
			Image:      s.img.registry,
			Cmd:        []string{"-mode", "registry", "-host", "0.0.0.0", "-registry-port", "8081", "-kafka", s.bootstrap()},
			WaitingFor: wf,
		})
	}
	return s.run(ctx, "registry", registryPort, "Server started, listening for requests", testcontainers.ContainerRequest{
		Image: s.img.registry,
		Env: map[string]string{
			"SCHEMA_REGISTRY_HOST_NAME":                    "registry",
			"SCHEMA_REGISTRY_LISTENERS":                    "http://0.0.0.0:8081",
			"SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS": s.bootstrap(),
		},
		WaitingFor: wf,
	})
}

func (s *stack) startProbe(ctx context.Context) (*node, error) {
	return s.run(ctx, "probe", probePort, "probe listening", testcontainers.ContainerRequest{
		Image:      s.img.probe,
		Env:        map[string]string{"KAFKA_BROKERS": s.bootstrap(), "PROBE_ADDR": ":8099"},
		WaitingFor: wait.ForHTTP("/healthz").WithPort(probePort).WithStartupTimeout(time.Minute),
	})
}

func (s *stack) startProcessing(ctx context.Context) (*node, error) {
	return s.run(ctx, "processing", processingPort, "consuming", testcontainers.ContainerRequest{
		Image: s.img.processing,
		Env:   withEnv(processingEnv(s.token), s.kafkaEnv()),
		WaitingFor: wait.ForHTTP("/readyz").WithPort(processingPort).
			WithPollInterval(50 * time.Millisecond).WithStartupTimeout(2 * time.Minute),
	})
}

// waitFor says how long startIngestion waits.
type waitFor int

const (
	untilReady   waitFor = iota // /readyz answers 200
	untilServing                // the replica logged that it serves HTTP
	untilStarted                // the container is running, nothing more
)

// startIngestion starts a new ingestion replica (replica ids are never reused) and waits
// as w says. The caller adds it to s.ingestion if it is to take traffic.
func (s *stack) startIngestion(ctx context.Context, w waitFor) (*node, error) {
	s.mu.Lock()
	s.replicas++
	name := fmt.Sprintf("ingestion-%d", s.replicas)
	s.mu.Unlock()
	const serving = "ingestion serving"
	var wf wait.Strategy
	switch w {
	case untilReady:
		wf = wait.ForHTTP("/readyz").WithPort(ingestionPort).
			WithPollInterval(50 * time.Millisecond).WithStartupTimeout(2 * time.Minute)
	case untilServing:
		wf = wait.ForLog(serving).WithPollInterval(20 * time.Millisecond).WithStartupTimeout(time.Minute)
	}
	return s.run(ctx, name, ingestionPort, serving, testcontainers.ContainerRequest{
		Image:      s.img.ingestion,
		Env:        withEnv(ingestionEnv(name), s.kafkaEnv()),
		WaitingFor: wf,
	})
}

// replicas returns the ingestion replicas in service.
func (s *stack) replicaNodes() []*node {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*node(nil), s.ingestion...)
}

// replace puts fresh in old's place among the replicas in service.
func (s *stack) replace(old, fresh *node) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, n := range s.ingestion {
		if n == old {
			s.ingestion[i] = fresh
			return
		}
	}
	s.ingestion = append(s.ingestion, fresh)
}

// kill sends SIGKILL to a container: the process gets no chance to clean up, as with
// kill -9 or a node lost.
func (s *stack) kill(ctx context.Context, n *node) error {
	cli, err := docker(ctx)
	if err != nil {
		return err
	}
	if _, err := cli.ContainerKill(ctx, n.c.GetContainerID(), client.ContainerKillOptions{Signal: "SIGKILL"}); err != nil {
		return fmt.Errorf("kill %s: %w", n.name, err)
	}
	// Wait until the engine reports it stopped.
	for ctx.Err() == nil {
		st, err := n.c.State(ctx)
		if err == nil && !st.Running {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ctx.Err()
}

// stop stops a container gracefully (SIGTERM, then SIGKILL after timeout).
func (s *stack) stop(ctx context.Context, n *node, timeout time.Duration) error {
	if err := n.c.Stop(ctx, &timeout); err != nil {
		return fmt.Errorf("stop %s: %w", n.name, err)
	}
	return nil
}

// start starts a stopped container again and waits until it has printed its ready line
// once more. Its mapped port may have changed: node.url reads it again.
func (s *stack) start(ctx context.Context, n *node) error {
	if err := n.c.Start(ctx); err != nil {
		return fmt.Errorf("start %s again: %w", n.name, err)
	}
	n.starts++
	for {
		if strings.Count(n.logs(ctx), n.readyLog) >= n.starts {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s started again but never printed %q: %w%s", n.name, n.readyLog, ctx.Err(), n.logTail(context.WithoutCancel(ctx), 20))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// logs returns the container's whole log (stdout and stderr).
func (n *node) logs(ctx context.Context) string {
	if n == nil || n.c == nil {
		return ""
	}
	rc, err := n.c.Logs(ctx)
	if err != nil {
		return ""
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}

// logTail returns the last lines of the container's log, for error messages.
func (n *node) logTail(ctx context.Context, lines int) string {
	all := strings.TrimRight(n.logs(ctx), "\n")
	if all == "" {
		return ""
	}
	ls := strings.Split(all, "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return fmt.Sprintf("\n--- last %d lines of %s ---\n%s", len(ls), n.name, strings.Join(ls, "\n"))
}

// countLines counts the log lines of n that contain every one of substrs.
func (n *node) countLines(ctx context.Context, substrs ...string) int {
	count := 0
	sc := bufio.NewScanner(strings.NewReader(n.logs(ctx)))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		ok := true
		for _, s := range substrs {
			if !strings.Contains(sc.Text(), s) {
				ok = false
				break
			}
		}
		if ok {
			count++
		}
	}
	return count
}

// logsOnFailure prints the end of every container's log when t fails.
func (s *stack) logsOnFailure(t *testing.T) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s.mu.Lock()
		all := append([]*node(nil), s.all...)
		s.mu.Unlock()
		for _, n := range all {
			t.Log(n.logTail(ctx, 15))
		}
	})
}

// close saves every container's log under e2e/.build/logs/<stack>/, then removes the
// containers and the network.
func (s *stack) close(ctx context.Context) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	all := append([]*node(nil), s.all...)
	s.mu.Unlock()
	dir := filepath.Join(".build", "logs", s.name)
	_ = os.RemoveAll(dir)
	_ = os.MkdirAll(dir, 0o755)
	var wg sync.WaitGroup
	for _, n := range all {
		wg.Go(func() {
			_ = os.WriteFile(filepath.Join(dir, n.name+".log"), []byte(n.logs(ctx)), 0o644)
			timeout := 5 * time.Second
			_ = n.c.Terminate(ctx, testcontainers.StopTimeout(timeout))
		})
	}
	wg.Wait()
	if s.net != nil {
		_ = s.net.Remove(ctx)
	}
	if cli, err := docker(ctx); err == nil {
		for _, n := range s.extraNets {
			_, _ = cli.NetworkRemove(ctx, n, client.NetworkRemoveOptions{})
		}
	}
}

// newStack starts a stack of the test's own, removed when the test ends.
func newStack(t *testing.T, name string) *stack {
	t.Helper()
	requireDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	start := time.Now()
	s, err := startStack(ctx, name)
	if err != nil {
		t.Fatalf("start a stack: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		s.close(ctx)
	})
	s.logsOnFailure(t)
	t.Logf("stack %s started in %s", name, since(start))
	return s
}

// eachBroker runs f on every broker at once.
func (s *stack) eachBroker(f func(*node) error) error {
	errs := make([]error, len(s.brokers))
	var wg sync.WaitGroup
	for i, b := range s.brokers {
		wg.Go(func() { errs[i] = f(b) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
