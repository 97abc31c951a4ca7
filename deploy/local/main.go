// Command local runs the whole Sluice suite on one machine with nothing installed but Go:
// an embedded Kafka-protocol broker (kfake, persisted under .sluice-data so throttles
// survive a restart) and Schema Registry (srfake), one processing and two ingestion
// replicas, on fixed ports. `make run` starts it; Ctrl-C stops everything.
//
// The services run as child processes built from this repository, exactly the binaries
// a deployment runs, configured through the same environment variables.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
)

// Fixed local ports, printed at start.
const (
	brokerPort     = 9092
	registryPort   = 8081
	processingPort = 8090
	ingestionPort1 = 8080
	ingestionPort2 = 8082
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "local:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("local", flag.ContinueOnError)
	infraOnly := fs.Bool("infra-only", false, "start only the broker and the registry (run each service yourself with go run)")
	demo := fs.Bool("demo", false, "drive traffic: one noisy customer among quiet ones")
	dataDir := fs.String("data-dir", ".sluice-data", "where the broker keeps its log")
	if err := fs.Parse(args); err != nil {
		return err
	}
	token := os.Getenv("ADMIN_TOKEN")
	if token == "" {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		token = hex.EncodeToString(b)
	}

	stack, err := throttletest.New(throttletest.Options{
		DataDir: filepath.Join(*dataDir, "kafka"), KafkaPort: brokerPort, RegistryPort: registryPort,
		// Compact every minute, as a real broker's cleaner would from time to time.
		BrokerConfigs: map[string]string{"log.cleaner.backoff.ms": "60000"},
	})
	if err != nil {
		return fmt.Errorf("start embedded broker and registry: %w", err)
	}
	defer stack.Close()
	// The registry is in memory: register the schema first thing, so it gets the same id
	// as in the persisted records every time the stack starts.
	codec, err := throttle.NewCodec(throttle.RegistryConfig{URL: stack.RegistryURL()}, throttle.DefaultTopic)
	if err != nil {
		return err
	}
	if _, err := codec.Register(); err != nil {
		return err
	}
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := throttle.EnsureTopic(tctx, stack.Kafka(), throttle.TopicSpec{}); err != nil {
		return err
	}

	fmt.Fprintf(out, `
Sluice local stack
  Kafka broker      127.0.0.1:%d   (log in %s)
  Schema Registry   http://127.0.0.1:%d
`, brokerPort, *dataDir, registryPort)
	if *infraOnly {
		fmt.Fprintf(out, `
Only the broker and the registry are running. Start services with, for example:
  go run ./services/processing
  HTTP_ADDR=:8080 REPLICA_ID=ingestion-1 go run ./services/ingestion
Ctrl-C stops.
`)
		<-ctx.Done()
		return nil
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
		fmt.Sprintf("KAFKA_BROKERS=127.0.0.1:%d", brokerPort),
		fmt.Sprintf("SCHEMA_REGISTRY_URL=http://127.0.0.1:%d", registryPort),
		"LOG_FORMAT=console",
		"TOPIC_REPLICATION_FACTOR=1", "TOPIC_MIN_INSYNC_REPLICAS=1",
	}
	procs := []proc{
		{name: "processing", bin: filepath.Join(bin, "processing"), env: append(common, fmt.Sprintf("ADMIN_ADDR=:%d", processingPort), "ADMIN_TOKEN="+token, "INSTANCE_ID=processing-1")},
		{name: "ingestion-1", bin: filepath.Join(bin, "ingestion"), env: append(common, fmt.Sprintf("HTTP_ADDR=:%d", ingestionPort1), "REPLICA_ID=ingestion-1")},
		{name: "ingestion-2", bin: filepath.Join(bin, "ingestion"), env: append(common, fmt.Sprintf("HTTP_ADDR=:%d", ingestionPort2), "REPLICA_ID=ingestion-2")},
	}
	fmt.Fprintf(out, `  processing admin  http://127.0.0.1:%d   (ADMIN_TOKEN=%s)
  ingestion         http://127.0.0.1:%d  http://127.0.0.1:%d

Try:
  curl -s -XPOST localhost:%d/v1/events -d '{"customer":"acme","payload":{"n":1}}'
  curl -s -XPOST -H "Authorization: Bearer %s" localhost:%d/v1/throttles \
       -d '{"customer":"acme","limit":20,"window":"1m","duration":"10m","reason":"demo"}'
Ctrl-C stops everything.

`, processingPort, token, ingestionPort1, ingestionPort2, ingestionPort1, token, processingPort)

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
				fmt.Sprintf("http://127.0.0.1:%d", ingestionPort1),
				fmt.Sprintf("http://127.0.0.1:%d", ingestionPort2),
			})
		}()
	}
	ctx, cancel = context.WithCancel(ctx)
	defer cancel()
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
