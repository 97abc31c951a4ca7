// Package kafkacluster runs a real Apache Kafka cluster for tests: KRaft nodes that are
// each broker and controller, as JVM child processes on loopback ports, with their data
// in a temporary directory. It needs Java 17 and Kafka's jars (`make kafka` fetches them
// into .kafka/<version>/libs). Nodes can be stopped, killed with SIGKILL and started
// again on the same ports and data, to test what clients do through failover.
package kafkacluster

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultVersion is the Kafka version `make kafka` fetches unless KAFKA_VERSION says
// otherwise; keep it equal to the Makefile's.
const DefaultVersion = "4.4.0"

// Config tunes a cluster. The zero value is three nodes of DefaultVersion found by
// FindLibs.
type Config struct {
	// Libs is the directory of Kafka's jars (default: FindLibs).
	Libs string
	// Nodes is the number of nodes, every one broker and controller (default 3).
	Nodes int
	// HeapMB is each JVM's maximum heap (default 320): the nodes share the machine.
	HeapMB int
	// BrokerConfigs are added to every node's server.properties, over the defaults.
	BrokerConfigs map[string]string
	// Security, when set, starts the cluster secured (see Security); nil is PLAINTEXT
	// with no authorizer.
	Security *Security
	// LogLevel is the nodes' log level (slf4j-simple: trace, debug, info, warn, error;
	// default $SLUICE_KAFKA_LOG_LEVEL, else warn). Each node logs to Dir()/node-N/server.log.
	LogLevel string
}

// Cluster is a running cluster. Its methods are safe for concurrent use.
type Cluster struct {
	cfg       Config
	java      string
	dir       string
	version   string
	clusterID string
	archive   string     // class-data sharing archive, or ""
	tls       *serverTLS // certificates of a secured cluster; nil when plain
	nodes     []*node    // nodes[i].id == i+1

	mu             sync.Mutex      // serialises Start, Stop, Kill and Close of nodes
	brokerDefaults map[string]bool // names SetBrokerDefaults set, for Reset; under mu
}

type node struct {
	id             int
	brokerPort     int
	controllerPort int
	internalPort   int // secured clusters only: the PLAINTEXT inter-broker listener
	dir            string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited; nil while never started
}

// Start formats the storage of every node, starts them all and returns once every
// node serves, sees every other as a live broker, and group coordinators answer. Close
// it when done.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Nodes <= 0 {
		cfg.Nodes = 3
	}
	if cfg.HeapMB <= 0 {
		cfg.HeapMB = 320
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = os.Getenv("SLUICE_KAFKA_LOG_LEVEL")
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "warn"
	}
	if cfg.Libs == "" {
		libs, err := FindLibs()
		if err != nil {
			return nil, err
		}
		cfg.Libs = libs
	}
	version, err := libsVersion(cfg.Libs)
	if err != nil {
		return nil, err
	}
	java, err := findJava()
	if err != nil {
		return nil, err
	}
	removeStaleClusters()
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", tempPrefix, os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("kafka cluster dir: %w", err)
	}
	c := &Cluster{cfg: cfg, java: java, dir: dir, version: version, clusterID: newUUID(), brokerDefaults: map[string]bool{}}
	if err := c.setUp(ctx); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) setUp(ctx context.Context) error {
	ports, err := freePorts(3 * c.cfg.Nodes)
	if err != nil {
		return err
	}
	for i := range c.cfg.Nodes {
		n := &node{
			id: i + 1, brokerPort: ports[3*i], controllerPort: ports[3*i+1],
			dir: filepath.Join(c.dir, "node-"+strconv.Itoa(i+1)),
		}
		if c.cfg.Security != nil {
			n.internalPort = ports[3*i+2]
		}
		c.nodes = append(c.nodes, n)
	}
	if c.cfg.Security != nil {
		if c.tls, err = makeServerTLS(filepath.Join(c.dir, "tls")); err != nil {
			return err
		}
	}
	for _, n := range c.nodes {
		if err := os.MkdirAll(n.dir, 0o755); err != nil {
			return fmt.Errorf("kafka node dir: %w", err)
		}
		if err := os.WriteFile(n.propsFile(), []byte(c.properties(n)), 0o644); err != nil {
			return fmt.Errorf("write server.properties: %w", err)
		}
	}
	if err := c.format(ctx); err != nil {
		return err
	}
	c.archive = c.classArchive(ctx)
	for _, n := range c.nodes {
		if err := c.spawn(n); err != nil {
			return err
		}
	}
	if err := c.waitServing(ctx, c.nodes); err != nil {
		return err
	}
	return c.WaitGroupCoordinators(ctx)
}

// defaults are the broker settings every test cluster runs with: replication as in
// production, and timings short enough for tests (the cleaner, fencing a dead node).
var defaults = map[string]string{
	"default.replication.factor":                   "3",
	"min.insync.replicas":                          "2",
	"offsets.topic.replication.factor":             "3",
	"offsets.topic.num.partitions":                 "5", // 50 would take seconds to create on first group use
	"transaction.state.log.replication.factor":     "3",
	"transaction.state.log.min.isr":                "2",
	"transaction.state.log.num.partitions":         "5",
	"share.coordinator.state.topic.num.partitions": "5",
	"group.initial.rebalance.delay.ms":             "0",
	"auto.create.topics.enable":                    "false",
	"unclean.leader.election.enable":               "false",
	// The cleaner wakes every half second (default 15 s), with a buffer that fits a
	// small heap (default 128 MiB); scheduled log tasks start at once (default 30 s).
	"log.cleaner.backoff.ms":          "500",
	"log.cleaner.dedupe.buffer.size":  strconv.Itoa(16 << 20),
	"log.initial.task.delay.ms":       "0",
	"log.retention.check.interval.ms": "1000",
	"log.segment.delete.delay.ms":     "1000",
	"file.delete.delay.ms":            "1000",
	// A log start offset moved by DeleteRecords reaches the disk only with this
	// checkpoint (default every 60 s): a test that kills every node after deleting
	// records would otherwise see them come back.
	"log.flush.start.offset.checkpoint.interval.ms": "500",
	"num.network.threads":                           "2",
	"num.io.threads":                                "2",
	"background.threads":                            "2",
	"num.recovery.threads.per.data.dir":             "1",
	"group.coordinator.threads":                     "1",
	// A killed node is fenced, and loses its leaderships, within a few seconds.
	"broker.heartbeat.interval.ms": "500",
	"broker.session.timeout.ms":    "4000",
	"replica.lag.time.max.ms":      "10000",
}

func (c *Cluster) properties(n *node) string {
	props := c.props(n)
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(props)) {
		fmt.Fprintf(&b, "%s=%s\n", k, props[k])
	}
	return b.String()
}

// props are node n's server.properties.
func (c *Cluster) props(n *node) map[string]string {
	voters := make([]string, len(c.nodes))
	for i, v := range c.nodes {
		voters[i] = fmt.Sprintf("%d@127.0.0.1:%d", v.id, v.controllerPort)
	}
	props := map[string]string{
		"process.roles":                  "broker,controller",
		"node.id":                        strconv.Itoa(n.id),
		"controller.quorum.voters":       strings.Join(voters, ","),
		"listeners":                      fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d", n.brokerPort, n.controllerPort),
		"advertised.listeners":           fmt.Sprintf("PLAINTEXT://127.0.0.1:%d", n.brokerPort),
		"listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
		"controller.listener.names":      "CONTROLLER",
		"inter.broker.listener.name":     "PLAINTEXT",
		"log.dirs":                       filepath.Join(n.dir, "data"),
	}
	maps.Copy(props, defaults)
	if c.cfg.Security != nil {
		maps.Copy(props, c.secureProps(n))
	}
	maps.Copy(props, c.cfg.BrokerConfigs)
	if len(c.nodes) < 3 { // a smaller cluster cannot hold three replicas
		for _, k := range []string{"default.replication.factor", "offsets.topic.replication.factor", "transaction.state.log.replication.factor"} {
			props[k] = strconv.Itoa(len(c.nodes))
		}
		for _, k := range []string{"min.insync.replicas", "transaction.state.log.min.isr"} {
			props[k] = strconv.Itoa(min(2, len(c.nodes)))
		}
	}
	return props
}

func (n *node) propsFile() string { return filepath.Join(n.dir, "server.properties") }

// LogFile is where node id writes its log.
func (c *Cluster) LogFile(id int) string {
	return filepath.Join(c.dir, "node-"+strconv.Itoa(id), "server.log")
}

// jvmArgs are the options of every JVM; shared adds the class-data archive, if any.
func (c *Cluster) jvmArgs(heapMB int, shared bool) []string {
	args := []string{
		"-Xms64m", "-Xmx" + strconv.Itoa(heapMB) + "m",
		// One GC thread and the quick compiler only: three JVMs share two cores, and
		// startup, not peak throughput, is what tests wait for.
		"-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData",
		"-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
		"-Dorg.slf4j.simpleLogger.defaultLogLevel=" + c.cfg.LogLevel,
		"-Dorg.slf4j.simpleLogger.showDateTime=true",
		"-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
		"-cp", filepath.Join(c.cfg.Libs, "*"),
	}
	if shared && c.archive != "" {
		args = append(args, "-XX:SharedArchiveFile="+c.archive)
	}
	// Extra JVM options, last so that they win (a debugger, a bigger heap).
	return append(args, strings.Fields(os.Getenv("SLUICE_KAFKA_JVM_OPTS"))...)
}

// spawn starts node n's JVM. The caller holds no lock on n.
func (c *Cluster) spawn(n *node) error {
	return spawnJVM(n, "node "+strconv.Itoa(n.id), c.java, append(c.jvmArgs(c.cfg.HeapMB, true), "kafka.Kafka", n.propsFile()))
}

// spawnJVM starts java with args as process n (a node, or MirrorMaker), logging to
// n.dir/server.log, unless n runs already. The caller holds no lock on n.
func spawnJVM(n *node, name, java string, args []string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done != nil {
		select {
		case <-n.done:
		default:
			return nil // running
		}
	}
	log, err := os.OpenFile(filepath.Join(n.dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s log: %w", name, err)
	}
	defer log.Close() // the child has its own descriptor
	fmt.Fprintf(log, "---- %s: starting %s\n", time.Now().Format(time.RFC3339Nano), name)
	cmd := exec.Command(java, args...)
	cmd.Dir = n.dir
	// A file, not a pipe: exec then starts no copying goroutine.
	cmd.Stdout, cmd.Stderr = log, log
	if err := start(cmd); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	done := make(chan struct{})
	n.cmd, n.done = cmd, done
	go func() { // owned by the node: Stop, Kill and Close wait for done
		_ = cmd.Wait()
		close(done)
	}()
	return nil
}

// Brokers returns every node's broker address, stopped ones included, as clients are
// configured with a fixed bootstrap list. On a secured cluster these are the SASL_SSL
// listeners.
func (c *Cluster) Brokers() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.addr()
	}
	return out
}

func (n *node) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.brokerPort)) }

// adminAddr is where the harness itself talks to node n: the client listener, or on a
// secured cluster the PLAINTEXT inter-broker one, whose principal is a super user, so
// the waits and Reset need no credentials and no ACL.
func (n *node) adminAddr() string {
	if n.internalPort != 0 {
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.internalPort))
	}
	return n.addr()
}

// adminBrokers are the adminAddr of every node.
func (c *Cluster) adminBrokers() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.adminAddr()
	}
	return out
}

// Addr returns node id's broker address.
func (c *Cluster) Addr(id int) string { return c.node(id).addr() }

// NodeIDs returns the ids of the nodes, 1 to n.
func (c *Cluster) NodeIDs() []int {
	ids := make([]int, len(c.nodes))
	for i, n := range c.nodes {
		ids[i] = n.id
	}
	return ids
}

// Version is the Kafka version the cluster runs, from its jars.
func (c *Cluster) Version() string { return c.version }

// Dir is the cluster's directory: each node's configuration, log and data.
func (c *Cluster) Dir() string { return c.dir }

func (c *Cluster) node(id int) *node {
	if id < 1 || id > len(c.nodes) {
		panic(fmt.Sprintf("kafkacluster: no node %d (nodes are 1 to %d)", id, len(c.nodes)))
	}
	return c.nodes[id-1]
}

// Running reports whether node id's process is alive.
func (c *Cluster) Running(id int) bool { return c.node(id).running() }

func (n *node) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// Stop shuts node id down cleanly (SIGTERM: controlled shutdown, leaderships moved
// first) and waits for its process to end; when ctx ends first, it is killed.
func (c *Cluster) Stop(ctx context.Context, id int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.node(id)
	if !n.running() {
		return nil
	}
	n.signal(syscall.SIGTERM)
	select {
	case <-n.wait():
		return nil
	case <-ctx.Done():
		n.signal(syscall.SIGKILL)
		<-n.wait()
		return fmt.Errorf("stop kafka node %d: killed after %w", id, ctx.Err())
	}
}

// Kill ends node id with SIGKILL, as a crash would, and waits for the process to end.
func (c *Cluster) Kill(id int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.node(id).kill()
}

func (n *node) kill() {
	if n.running() {
		n.signal(syscall.SIGKILL)
	}
	<-n.wait()
}

func (n *node) signal(sig syscall.Signal) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil && n.cmd.Process != nil {
		_ = n.cmd.Process.Signal(sig)
	}
}

// wait returns a channel closed when the node's process has ended (at once if it never
// started).
func (n *node) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done == nil {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	return n.done
}

// Start starts node id again, on its ports and data, and returns once it serves and
// sees every running node as a live broker. Starting a running node only waits.
func (c *Cluster) Start(ctx context.Context, id int) error {
	return c.StartNodes(ctx, id)
}

// StartNodes starts the given nodes (every stopped one when none is given) at once, and
// waits as Start does. A cluster that lost its quorum needs its nodes started together.
func (c *Cluster) StartNodes(ctx context.Context, ids ...int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var started []*node
	if len(ids) == 0 {
		for _, n := range c.nodes {
			if !n.running() {
				ids = append(ids, n.id)
			}
		}
	}
	for _, id := range ids {
		n := c.node(id)
		if err := c.spawn(n); err != nil {
			return err
		}
		started = append(started, n)
	}
	return c.waitServing(ctx, started)
}

// Close kills every node (the data is thrown away, so there is nothing to shut down
// cleanly) and removes the cluster's directory.
func (c *Cluster) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Go(n.kill)
	}
	wg.Wait()
	if err := os.RemoveAll(c.dir); err != nil {
		return fmt.Errorf("remove kafka cluster dir: %w", err)
	}
	return nil
}

// FindLibs finds Kafka's jars: $SLUICE_KAFKA_LIBS, else .kafka/<version>/libs in the
// working directory or the nearest parent that has it, version being $KAFKA_VERSION or
// DefaultVersion (the layout `make kafka` fills).
func FindLibs() (string, error) {
	if libs := os.Getenv("SLUICE_KAFKA_LIBS"); libs != "" {
		return libs, nil
	}
	version := os.Getenv("KAFKA_VERSION")
	if version == "" {
		version = DefaultVersion
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find kafka jars: %w", err)
	}
	rel := filepath.Join(".kafka", version, "libs")
	for {
		libs := filepath.Join(dir, rel)
		if _, err := libsVersion(libs); err == nil {
			return libs, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("find kafka jars: no %s here or above (run make kafka, or set SLUICE_KAFKA_LIBS)", rel)
		}
		dir = parent
	}
}

// libsVersion reads the Kafka version from the name of the core jar in libs.
func libsVersion(libs string) (string, error) {
	jars, _ := filepath.Glob(filepath.Join(libs, "kafka_2.13-*.jar"))
	for _, j := range jars {
		v := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(j), "kafka_2.13-"), ".jar")
		if !strings.ContainsAny(v, "-") { // not -sources, -test
			return v, nil
		}
	}
	return "", fmt.Errorf("no kafka_2.13 jar in %s (run make kafka)", libs)
}

func findJava() (string, error) {
	if home := os.Getenv("JAVA_HOME"); home != "" {
		java := filepath.Join(home, "bin", "java")
		if _, err := os.Stat(java); err == nil {
			return java, nil
		}
	}
	java, err := exec.LookPath("java")
	if err != nil {
		return "", fmt.Errorf("kafka needs java 17 or later: %w", err)
	}
	return java, nil
}

// freePorts reserves n loopback ports by listening on them all at once (so no two are
// the same), then releases them for the nodes.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		lns = append(lns, ln)
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}

// newUUID returns a random id in Kafka's text form (URL-safe base64 of 16 bytes, without
// padding), avoiding a leading '-' as Kafka's own generator does.
func newUUID() string {
	for {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		if s := base64.RawURLEncoding.EncodeToString(b); s[0] != '-' {
			return s
		}
	}
}

// tempPrefix starts the name of every cluster directory, followed by the owning
// process id.
const tempPrefix = "sluice-kafka-"

// removeStaleClusters removes the directories of clusters whose test process is gone: a process
// that exits without Close (a test timeout, a kill) takes its nodes with it (see start)
// but leaves their data.
func removeStaleClusters() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, d := range dirs {
		rest := strings.TrimPrefix(filepath.Base(d), tempPrefix)
		pidText, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid == os.Getpid() {
			continue
		}
		if !alive(pid) {
			_ = os.RemoveAll(d)
		}
	}
}
