// Command local runs the whole Sluice suite on one machine with nothing installed but Go:
// an embedded Kafka-protocol broker (kfake, persisted under .sluice-data so throttles
// survive a restart) and Schema Registry (srfake behind throttletest/registry: it keeps
// its schemas in the broker's _schemas topic and checks compatibility), one processing
// and two ingestion replicas, on fixed ports. `make run` starts it; Ctrl-C stops
// everything.
//
// The services run as child processes built from this repository, exactly the binaries
// a deployment runs, configured through the same environment variables.
//
// The same binary runs the fake infrastructure in containers, for the e2e suite or a
// docker-compose file (see Dockerfile): -mode broker or -mode registry runs one half
// alone, so that each can be stopped on its own; -host 0.0.0.0 listens on every
// interface and -advertised-host names the host (a network alias) that the broker
// tells clients to connect to. -mode registry keeps its schemas in the broker that
// -kafka names, as Confluent's registry does with kafkastore.bootstrap.servers.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest/registry"
)

// The modes of -mode.
const (
	modeAll      = "all"
	modeInfra    = "infra"
	modeBroker   = "broker"
	modeRegistry = "registry"
)

// Default local ports, printed at start; flags change them.
const (
	brokerPort     = 9092
	registryPort   = 8081
	processingPort = 8090
	ingestionPort1 = 8080
	ingestionPort2 = 8082
)

func main() {
	// The registry image's health check (scratch has no curl): `local healthcheck [host:port]`.
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(registryHealthcheck(os.Args[2:], os.Stderr))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "local:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("local", flag.ContinueOnError)
	mode := fs.String("mode", modeAll, "what to run: all (broker, registry and services), infra (broker and registry), broker, or registry")
	infraOnly := fs.Bool("infra-only", false, "start only the broker and the registry (same as -mode infra; run each service yourself with go run)")
	demo := fs.Bool("demo", false, "drive traffic: one noisy customer among quiet ones (mode all)")
	dataDir := fs.String("data-dir", ".sluice-data", "where the broker keeps its log")
	host := fs.String("host", "127.0.0.1", "interface the broker and the registry listen on (0.0.0.0 in a container)")
	advertised := fs.String("advertised-host", "", "host the broker tells clients to connect to, such as a container's network alias (default: -host; required when -host is 0.0.0.0)")
	kport := fs.Int("kafka-port", brokerPort, "the broker's port")
	rport := fs.Int("registry-port", registryPort, "the registry's port")
	pport := fs.Int("processing-port", processingPort, "the processing service's admin port")
	iport1 := fs.Int("ingestion-port", ingestionPort1, "the first ingestion replica's port")
	iport2 := fs.Int("ingestion-port-2", ingestionPort2, "the second ingestion replica's port")
	kafkaAddr := fs.String("kafka", "", "the brokers -mode registry keeps its schemas in (host:port[,host:port...]; required with -mode registry)")
	readOnly := fs.Bool("read-only", false, "with -mode registry: follow the schemas topic that a mirror (MirrorMaker 2) fills from another region's registry, and refuse new schemas (a second region's registry; restart without it to fail over)")
	compactEvery := fs.Duration("compact-every", time.Minute, "how often the broker compacts compacted topics (kfake's log.cleaner.backoff.ms), as a real broker's cleaner would from time to time")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// A stray word (a health-check subcommand meant for another binary, a typo) must not
	// start a second broker on the same data directory.
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (see -h)", fs.Args())
	}
	if *infraOnly {
		*mode = modeInfra
	}
	switch *mode {
	case modeAll, modeInfra, modeBroker, modeRegistry:
	default:
		return fmt.Errorf("-mode %q: want all, infra, broker or registry", *mode)
	}
	if *demo && *mode != modeAll {
		return fmt.Errorf("-demo needs -mode all: it sends events to the services")
	}
	switch {
	case *mode == modeRegistry && *kafkaAddr == "":
		return fmt.Errorf("-mode registry needs -kafka host:port[,host:port...]: the brokers it keeps its schemas in (it runs no broker of its own)")
	case *mode != modeRegistry && *kafkaAddr != "":
		return fmt.Errorf("-kafka goes only with -mode registry: -mode %s runs its own broker and keeps the schemas there", *mode)
	case *readOnly && *mode != modeRegistry:
		return fmt.Errorf("-read-only goes only with -mode registry: it makes a registry that follows another region's schemas")
	}
	if *compactEvery <= 0 {
		return fmt.Errorf("-compact-every %s: want > 0", *compactEvery)
	}
	// Clients inside this process (and the services it starts) dial the listening
	// address, or loopback when it is every interface.
	dialHost := *host
	if ip := net.ParseIP(dialHost); ip != nil && ip.IsUnspecified() {
		dialHost = "127.0.0.1"
		if *advertised == "" && *mode != modeRegistry {
			return fmt.Errorf("-host %s needs -advertised-host: clients cannot connect to %s", *host, *host)
		}
	}
	if *mode == modeRegistry {
		return runRegistry(ctx, out, net.JoinHostPort(*host, strconv.Itoa(*rport)), dialHost, *kafkaAddr, *readOnly)
	}
	opts := throttletest.Options{
		DataDir: filepath.Join(*dataDir, "kafka"), KafkaPort: *kport, RegistryPort: *rport,
		KafkaHost: *host, AdvertisedHost: *advertised, RegistryHost: *host,
		BrokerConfigs: map[string]string{"log.cleaner.backoff.ms": strconv.FormatInt(compactEvery.Milliseconds(), 10)},
	}
	if *mode == modeBroker {
		// throttletest always starts a registry too: keep it off the registry's port and
		// stop it below; in this mode the registry runs elsewhere.
		opts.RegistryHost, opts.RegistryPort = "127.0.0.1", 0
	}
	stack, err := throttletest.New(opts)
	if err != nil {
		return fmt.Errorf("start embedded broker and registry: %w", err)
	}
	defer stack.Close()
	// The ports actually bound (a flag may say 0: any free port).
	_, kafkaPort, _ := net.SplitHostPort(stack.Brokers()[0])
	brokerAddr := net.JoinHostPort(dialHost, kafkaPort)
	if *mode == modeBroker {
		// The services create the topics, as they do on a real cluster.
		stack.StopRegistry()
		fmt.Fprintf(out, "Kafka broker listening on %s, advertised as %s (log in %s)\n",
			net.JoinHostPort(*host, kafkaPort), stack.Brokers()[0], *dataDir)
		<-ctx.Done()
		return nil
	}
	_, regPort, _ := net.SplitHostPort(strings.TrimPrefix(stack.RegistryURL(), "http://"))
	registryAddr := net.JoinHostPort(dialHost, regPort)

	// The registry keeps its schemas in the broker, under .sluice-data with the
	// throttles: registering is a no-op once it holds the schema, and gives a fresh data
	// directory the schema before any service asks for it.
	codec, err := throttle.NewCodec(throttle.RegistryConfig{URL: "http://" + registryAddr}, throttle.DefaultTopic)
	if err != nil {
		return err
	}
	if _, err := codec.Register(); err != nil {
		return err
	}
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	kc := stack.Kafka()
	kc.Brokers = []string{brokerAddr}
	if _, err := throttle.EnsureTopic(tctx, kc, throttle.TopicSpec{}); err != nil {
		return err
	}

	fmt.Fprintf(out, `
Sluice local stack
  Kafka broker      %s   (log in %s)
  Schema Registry   http://%s
`, stack.Brokers()[0], *dataDir, registryAddr)
	if *mode == modeInfra {
		fmt.Fprintf(out, `
Only the broker and the registry are running. Start services with, for example:
  go run ./services/processing
  HTTP_ADDR=:8080 REPLICA_ID=ingestion-1 go run ./services/ingestion
Ctrl-C stops.
`)
		<-ctx.Done()
		return nil
	}

	token := os.Getenv("ADMIN_TOKEN")
	if token == "" {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		token = hex.EncodeToString(b)
	}

	bin, err := os.MkdirTemp("", "sluice-local-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(bin)
	for _, svc := range []string{"processing", "ingestion"} {
		build := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(bin, svc), "./services/"+svc)
		build.Stdout, build.Stderr = out, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("build %s (run from the repository root): %w", svc, err)
		}
	}
	common := []string{
		"KAFKA_BROKERS=" + brokerAddr,
		"SCHEMA_REGISTRY_URL=http://" + registryAddr,
		"LOG_FORMAT=console",
		"TOPIC_REPLICATION_FACTOR=1", "TOPIC_MIN_INSYNC_REPLICAS=1",
	}
	procs := []proc{
		{name: "processing", bin: filepath.Join(bin, "processing"), env: append(common, fmt.Sprintf("ADMIN_ADDR=:%d", *pport), "ADMIN_TOKEN="+token, "INSTANCE_ID=processing-1")},
		{name: "ingestion-1", bin: filepath.Join(bin, "ingestion"), env: append(common, fmt.Sprintf("HTTP_ADDR=:%d", *iport1), "REPLICA_ID=ingestion-1")},
		{name: "ingestion-2", bin: filepath.Join(bin, "ingestion"), env: append(common, fmt.Sprintf("HTTP_ADDR=:%d", *iport2), "REPLICA_ID=ingestion-2")},
	}
	fmt.Fprintf(out, `  processing admin  http://127.0.0.1:%d   (ADMIN_TOKEN=%s)
  ingestion         http://127.0.0.1:%d  http://127.0.0.1:%d

Try:
  curl -s -XPOST localhost:%d/v1/events -d '{"customer":"acme","payload":{"n":1}}'
  curl -s -XPOST -H "Authorization: Bearer %s" localhost:%d/v1/throttles \
       -d '{"customer":"acme","limit":20,"window":"1m","duration":"10m","reason":"demo"}'
Ctrl-C stops everything.

`, *pport, token, *iport1, *iport2, *iport1, token, *pport)

	// Cancelled when a service stops, to stop the others; made before the goroutines
	// that read it start.
	ctx, cancel = context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(procs))
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.run(ctx, out); err != nil {
				errs <- err
			}
		}()
	}
	if *demo {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runDemo(ctx, out, []string{
				fmt.Sprintf("http://127.0.0.1:%d", *iport1),
				fmt.Sprintf("http://127.0.0.1:%d", *iport2),
			})
		}()
	}
	select {
	case <-ctx.Done():
	case err := <-errs:
		fmt.Fprintln(out, "a service stopped:", err, "- stopping the stack")
		cancel()
	}
	wg.Wait()
	return nil
}

// proc is one service child process; its output is prefixed with its name.
type proc struct {
	name string
	bin  string
	env  []string
}

func (p proc) run(ctx context.Context, out io.Writer) error {
	cmd := exec.Command(p.bin)
	cmd.Env = append(os.Environ(), p.env...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); pw.Close() }()
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			fmt.Fprintf(out, "%-12s | %s\n", p.name, sc.Text())
		}
	}()
	select {
	case err := <-done:
		return fmt.Errorf("%s exited: %w", p.name, err)
	case <-ctx.Done():
		// Graceful: SIGTERM, then a deadline.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		return nil
	}
}

// runRegistry serves a Schema Registry on addr until ctx ends, keeping its schemas in
// the broker at kafkaAddr. dialHost is how this process reaches it.
func runRegistry(ctx context.Context, out io.Writer, addr, dialHost, kafkaAddr string, readOnly bool) error {
	reg, err := openRegistry(ctx, out, kafkaAddr, readOnly)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while waiting for the broker
		}
		return err
	}
	defer reg.Close()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("start registry on %s: %w", addr, err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	dial := net.JoinHostPort(dialHost, port)
	srv := &http.Server{Handler: reg.Handler(), ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	// A no-op once the broker holds the schema; on a new broker it registers the
	// schema before any service asks for it.
	codec, err := throttle.NewCodec(throttle.RegistryConfig{URL: "http://" + dial}, throttle.DefaultTopic)
	if err != nil {
		_ = srv.Close()
		return err
	}
	id, err := codec.Register()
	if err != nil {
		_ = srv.Close()
		return err
	}
	fmt.Fprintf(out, "Schema Registry listening on %s (schema id %d under %s; schemas kept in %s on %s)\n",
		ln.Addr(), id, (throttle.DefaultTopic + "-value"), registry.DefaultTopic, kafkaAddr)
	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("serve registry: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// openRegistry replays the registry's topic, retrying until the broker answers: in a
// container the registry may start before its broker. It does not listen before then,
// so nothing is served from a registry that has not read its schemas yet.
func openRegistry(ctx context.Context, out io.Writer, kafkaAddr string, readOnly bool) (*registry.Server, error) {
	opts := []registry.Option{registry.WithBrokers(strings.Split(kafkaAddr, ",")...)}
	if readOnly {
		opts = append(opts, registry.WithReadOnly())
	}
	var last time.Time
	for {
		actx, cancel := context.WithTimeout(ctx, 15*time.Second)
		reg, err := registry.New(actx, opts...)
		cancel()
		if err == nil {
			return reg, nil
		}
		if ctx.Err() != nil || errors.Is(err, registry.ErrReplay) {
			return nil, fmt.Errorf("start registry on broker %s: %w", kafkaAddr, err)
		}
		if time.Since(last) > 10*time.Second {
			fmt.Fprintf(out, "registry waits for broker %s: %v\n", kafkaAddr, err)
			last = time.Now()
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// registryHealthcheck exits 0 when the registry at args[0] (default 127.0.0.1:8081)
// answers GET /subjects with 200, as a health check of Confluent's image does.
func registryHealthcheck(args []string, stderr io.Writer) int {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(registryPort))
	if len(args) > 0 {
		addr = args[0]
	}
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + addr + "/subjects")
	if err != nil {
		fmt.Fprintf(stderr, "healthcheck: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "healthcheck: GET http://%s/subjects: %s\n", addr, resp.Status)
		return 1
	}
	return 0
}
