// Command ingestion takes customers' events in over HTTP, enforces the throttles it reads
// from the compacted throttle topic, and writes accepted events to the events topic.
//
// Configuration comes from the environment (see internal/config). The service listens on
// HTTP_ADDR (default :8080) and stops gracefully on SIGTERM or SIGINT: it fails /readyz,
// finishes the requests in flight, flushes the events it holds to Kafka, and writes its
// membership tombstone, all within SHUTDOWN_TIMEOUT.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/pkg/throttle/follow"
	"github.com/sluice-dev/sluice/services/ingestion/internal/config"
	"github.com/sluice-dev/sluice/services/ingestion/internal/fleet"
	"github.com/sluice-dev/sluice/services/ingestion/internal/limit"
	"github.com/sluice-dev/sluice/services/ingestion/internal/metrics"
	"github.com/sluice-dev/sluice/services/ingestion/internal/server"
	"github.com/sluice-dev/sluice/services/ingestion/internal/sink"
	"github.com/sluice-dev/sluice/services/platform/audit"
	"github.com/sluice-dev/sluice/services/platform/event"
	"github.com/sluice-dev/sluice/services/platform/mirror"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(runHealthcheck())
	}
	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintf(os.Stderr, "ingestion: %v\n", err)
		os.Exit(2)
	}
	log, err := cfg.Log.Logger()
	if err != nil {
		fmt.Fprintf(os.Stderr, "ingestion: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err = run(ctx, log, cfg)
	stop()
	if err != nil {
		log.Error("ingestion stopped", zap.Error(err))
		_ = log.Sync()
		os.Exit(1)
	}
	_ = log.Sync()
}

// run listens on cfg.HTTPAddr and serves until ctx ends.
func run(ctx context.Context, log *zap.Logger, cfg config.Config) error {
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err)
	}
	return serve(ctx, log, cfg, ln)
}

// serve runs the service on ln until ctx ends, then shuts down within
// cfg.ShutdownTimeout. It closes ln.
func serve(ctx context.Context, log *zap.Logger, cfg config.Config, ln net.Listener) error {
	defer ln.Close()
	log = log.With(zap.String("replica", cfg.ReplicaID))
	kc, err := cfg.Kafka("sluice-ingestion")
	if err != nil {
		return err
	}
	keys, err := cfg.Keys()
	if err != nil {
		return err
	}
	m := metrics.New()

	table, runTable, err := newTable(cfg, kc, log, m)
	if err != nil {
		return err
	}

	members, err := fleet.NewWriter(kc, cfg.MembersTopic)
	if err != nil {
		return err
	}
	defer cluster.CloseWriter(members)
	fl, err := fleet.New(fleet.Config{
		Replica: cfg.ReplicaID, Interval: cfg.HeartbeatInterval, TTL: cfg.MemberTTL, Log: log.Named("fleet"),
		Serving: table.Ready, // a replica still refusing events with 503 must not shrink the others' shares
	}, members, func(apply fleet.ApplyFunc) (fleet.Source, error) {
		return follow.New(kc, cfg.MembersTopic, apply,
			follow.WithLogger(log.Named("members")),
			follow.WithPollInterval(cfg.HeartbeatInterval),
			follow.WithBackoff(100*time.Millisecond, cfg.HeartbeatInterval))
	})
	if err != nil {
		return err
	}

	events, err := eventsWriter(kc, cfg)
	if err != nil {
		return err
	}
	defer cluster.CloseWriter(events)
	out := sink.New(events, sink.Config{
		Buffer: cfg.BufferEvents, MaxMessageBytes: cfg.MaxEventBytes, Timeout: cfg.WriteTimeout,
		Log: log.Named("sink"),
	})

	var tally *audit.Tally
	var auditor server.Auditor // stays a nil interface without the audit
	if cfg.AuditEnabled {
		var closeAudit func() error
		if tally, closeAudit, err = audit.Connect(kc, cfg.AuditTopic, audit.Ingestion, cfg.ReplicaID,
			audit.WithWidth(cfg.AuditBucket), audit.WithInterval(cfg.AuditInterval), audit.WithLogger(log.Named("audit"))); err != nil {
			return err
		}
		defer closeAudit()
		auditor = tally
		m.WatchAudit(tally.Errors)
	}

	limiter := limit.NewLimiter()
	srv := server.New(server.Config{Replica: cfg.ReplicaID, MaxBodyBytes: cfg.MaxBodyBytes, Keys: keys, Audit: auditor},
		table, limit.NewEnforcer(table, fl, limiter), fl, out, m)
	m.WatchTable(table.Stats)
	m.WatchFleet(fl.Size)
	m.WatchBuffer(out.Buffered, out.Capacity())

	// Background work runs on bg, which outlives ctx: while shutting down, the sink must
	// still write what requests are waiting for, and the fleet must still reach Kafka to
	// write the tombstone.
	bg, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBg()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		if err := runTable(bg); err != nil {
			log.Error("throttle table stopped", zap.Error(err))
		}
	})
	// The writers and readers of the membership and events topics start once their
	// topic exists: kafka-go caches a topic's absence in the transport's metadata for
	// its MetadataTTL, so starting earlier would delay them by that much after creation.
	// The retries stop with ctx, at the start of the shutdown, so that a replica that
	// never reached Kafka can still drain (nothing) and leave at once.
	wg.Go(func() {
		ensureMembersTopic(ctx, log, cfg, kc)
		_ = fl.Run(bg)
	})
	sinkDone := make(chan struct{})
	wg.Go(func() {
		defer close(sinkDone)
		ensureTopic(ctx, log, kc, event.TopicConfig(cfg.EventsTopic, cfg.EventsPartitions, cfg.ReplicationFactor, cfg.MinInsyncReplicas))
		// Run even if the topic could not be ensured: it answers every buffered request.
		_ = out.Run(bg)
	})
	wg.Go(func() { forgetFullBuckets(bg, limiter) })
	if tally != nil {
		wg.Go(func() {
			ensureTopic(ctx, log, kc, audit.TopicConfig(cfg.AuditTopic, cfg.ReplicationFactor, cfg.MinInsyncReplicas))
			tally.Run(bg)
		})
	}
	if cfg.MirrorHeartbeatTopic != "" {
		ages := mirror.NewAges(log.Named("mirror"))
		hb, err := follow.New(kc, cfg.MirrorHeartbeatTopic, ages.Apply, follow.WithLogger(log.Named("mirror")))
		if err != nil {
			return err
		}
		m.WatchMirror(ages.Age)
		wg.Go(func() { _ = hb.Run(bg) })
	}

	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          zap.NewStdLog(log.Named("http")),
	}
	serveErr := make(chan error, 1)
	wg.Go(func() { serveErr <- hs.Serve(ln) })
	log.Info("ingestion serving", zap.String("addr", ln.Addr().String()),
		zap.String("throttle_topic", cfg.ThrottleTopic), zap.String("events_topic", cfg.EventsTopic),
		zap.String("members_topic", cfg.MembersTopic), zap.Bool("api_keys", len(keys) > 0))

	var failed error
	select {
	case <-ctx.Done():
		log.Info("shutting down", zap.Duration("timeout", cfg.ShutdownTimeout))
	case err := <-serveErr:
		failed = fmt.Errorf("serve http: %w", err)
	}
	failed = errors.Join(failed, shutdown(log, cfg.ShutdownTimeout, srv, hs, out, sinkDone, fl, tally))
	stopBg()
	return failed
}

// eventsWriter is the events topic's writer (cluster.NewWriter: synchronous, acks=all,
// Murmur2), batching for BatchTimeout.
func eventsWriter(kc cluster.Config, cfg config.Config) (*kafka.Writer, error) {
	return cluster.NewWriter(kc, cfg.EventsTopic,
		// kafka-go allocates room for BatchSize messages with every batch it starts, so a
		// large value costs memory on every small batch; the sink already gathers the
		// events of concurrent requests, and 250 keeps big flushes to few requests.
		cluster.WithBatch(cfg.BatchTimeout, 250, int64(max(cfg.MaxEventBytes+4096, 1<<20))),
		// The sink retries what fails until each request's deadline; kafka-go's own
		// retries would only hide the failure from it.
		cluster.WithRetries(2, 10*time.Millisecond, 250*time.Millisecond),
		cluster.WithBalancer(sink.RecordPartitions))
}

// shutdown stops taking requests, lets those in flight get their answers, flushes the
// sink, and leaves the fleet, all before timeout.
func shutdown(log *zap.Logger, timeout time.Duration, srv *server.Server, hs *http.Server, out *sink.Sink, sinkDone <-chan struct{}, fl *fleet.Fleet, tally *audit.Tally) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var errs []error
	srv.Drain()
	if err := hs.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("drain http requests: %w", err))
	}
	out.Close()
	select {
	case <-sinkDone:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("flush events: %w (%d events not written)", ctx.Err(), out.Buffered()))
	}
	// Every request is answered: the counts are final.
	if tally != nil {
		if err := tally.Flush(ctx, true); err != nil {
			errs = append(errs, fmt.Errorf("publish the last audit counts: %w", err))
		}
	}
	if err := fl.Leave(ctx); err != nil {
		// The others stop counting this replica after the TTL instead.
		log.Warn("leave the fleet", zap.Error(err))
	}
	if len(errs) == 0 {
		log.Info("shut down cleanly")
	}
	return errors.Join(errs...)
}

// ensureMembersTopic creates the compacted membership topic if it is missing, retrying
// until it succeeds or ctx ends: the broker may come up after this replica.
func ensureMembersTopic(ctx context.Context, log *zap.Logger, cfg config.Config, kc cluster.Config) {
	retry(ctx, log, "ensure membership topic", func() error {
		_, err := throttle.EnsureTopic(ctx, kc, throttle.TopicSpec{
			Name: cfg.MembersTopic, Partitions: 1,
			ReplicationFactor: cfg.ReplicationFactor, MinInsyncReplicas: cfg.MinInsyncReplicas,
			// A heartbeat is stale after seconds: keep tombstones an hour and compact
			// often, so a rebuild reads little.
			DeleteRetention: time.Hour, SegmentMs: 10 * time.Minute,
			MaxCompactionLag: 30 * time.Minute, MinCompactionLag: time.Minute,
		})
		return err
	})
}

// ensureTopic creates topic (the events or the audit topic) if it is missing, retrying
// like ensureMembersTopic. The throttle topic is not ingestion's to create: the
// processing service does, and the table waits for it.
func ensureTopic(ctx context.Context, log *zap.Logger, kc cluster.Config, topic kafka.TopicConfig) {
	retry(ctx, log, "ensure topic "+topic.Topic, func() error {
		created, err := cluster.CreateTopics(ctx, kc, topic)
		if len(created) > 0 {
			log.Info("created topic", zap.String("topic", topic.Topic), zap.Int("partitions", topic.NumPartitions))
		}
		return err
	})
}

func retry(ctx context.Context, log *zap.Logger, what string, fn func() error) {
	backoff := 200 * time.Millisecond
	for {
		err := fn()
		if err == nil || ctx.Err() != nil {
			return
		}
		log.Warn(what+"; retrying", zap.Error(err), zap.Duration("backoff", backoff))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// forgetFullBuckets forgets full limiter buckets now and then, so memory follows the customers
// throttled recently rather than every customer ever throttled.
func forgetFullBuckets(ctx context.Context, l *limit.Limiter) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			l.ForgetFull(now)
		}
	}
}
