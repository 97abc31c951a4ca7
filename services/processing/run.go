package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/pkg/throttle/follow"
	"github.com/sluice-dev/sluice/services/platform/audit"
	"github.com/sluice-dev/sluice/services/platform/event"
	"github.com/sluice-dev/sluice/services/platform/mirror"
	"github.com/sluice-dev/sluice/services/processing/internal/admin"
	"github.com/sluice-dev/sluice/services/processing/internal/autothrottle"
	"github.com/sluice-dev/sluice/services/processing/internal/config"
	"github.com/sluice-dev/sluice/services/processing/internal/consume"
	"github.com/sluice-dev/sluice/services/processing/internal/detect"
	"github.com/sluice-dev/sluice/services/processing/internal/metrics"
)

// startTimeout bounds what run does before it consumes: topics, table catch-up.
const startTimeout = 2 * time.Minute

// run starts the service and blocks until ctx is done (SIGTERM) or a part of it fails,
// then drains within cfg.ShutdownTimeout: stop consuming, commit what was handled, flush
// the writers, stop the HTTP server, the table and the sweeper.
func run(ctx context.Context, log *zap.Logger, cfg config.Config) error {
	return runWith(ctx, log, cfg, newThrottleTopic)
}

// topicFunc builds the throttle topic's writer, table and sweeper; tests pass an in-memory one.
type topicFunc func(kc cluster.Config, cfg config.Config, codec *throttle.Codec, log *zap.Logger) (*throttleTopic, error)

// runWith is run with the throttle topic built by newTopic.
func runWith(ctx context.Context, log *zap.Logger, cfg config.Config, newTopic topicFunc) error {
	log.Info("starting", cfg.LogFields()...)

	kc, err := cfg.Kafka("sluice-processing-" + cfg.InstanceID)
	if err != nil {
		return err
	}
	if err := ensureTopics(ctx, kc, cfg, log); err != nil {
		return err
	}
	codec, err := throttle.NewCodec(cfg.Registry(), cfg.ThrottleTopic)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)

	topic, err := newTopic(kc, cfg, codec, log)
	if err != nil {
		return err
	}

	ctrl, err := autothrottle.New(autothrottle.Config{
		Detect: detect.Config{
			Window:       cfg.ShareWindow,
			AgeThreshold: cfg.AgeThreshold, AgeMinEvents: cfg.AgeMinEvents, AgeMinShare: cfg.AgeMinShare,
			ShareThreshold: cfg.ShareThreshold, MinEvents: cfg.MinEvents,
		},
		Limit: cfg.ThrottleLimit, Window: cfg.ThrottleWindow, Duration: cfg.ThrottleDuration,
		RenewMargin: cfg.RenewMargin, Mode: cfg.Mode(), InstanceID: cfg.InstanceID,
	}, topic.publisher, topic.table, autothrottle.WithMetrics(m), autothrottle.WithLogger(log))
	if err != nil {
		return err
	}

	processed, err := cluster.NewWriter(kc, cfg.ProcessedTopic)
	if err != nil {
		return err
	}
	dlq, err := cluster.NewWriter(kc, cfg.DLQTopic)
	if err != nil {
		return err
	}
	consumeOpts := []consume.Option{consume.WithObserver(ctrl), consume.WithMetrics(m), consume.WithLogger(log)}
	// The audit: this replica's counts, and the reconciliation of every replica's.
	var tally *audit.Tally
	var auditBook *follow.Follower
	if cfg.AuditEnabled {
		var closeAudit func() error
		// Eager: the events a killed replica handled last are counted, and so are their
		// second handling by the next owner, as duplicates.
		eager := audit.WithEager(min(50*time.Millisecond, cfg.AuditInterval))
		if tally, closeAudit, err = audit.Connect(kc, cfg.AuditTopic, audit.Processing, cfg.InstanceID,
			audit.WithWidth(cfg.AuditBucket), audit.WithInterval(cfg.AuditInterval), audit.WithLogger(log.Named("audit")), eager); err != nil {
			return err
		}
		defer closeAudit()
		consumeOpts = append(consumeOpts, consume.WithAudit(tally))
		book := audit.NewBook(log.Named("audit"), cfg.AuditWindow)
		if auditBook, err = follow.New(kc, cfg.AuditTopic, book.Apply, follow.WithLogger(log.Named("audit"))); err != nil {
			return err
		}
		metrics.WatchAudit(reg, func(now time.Time) []audit.Row {
			if !auditBook.Ready() {
				return nil // a part of the topic would show buckets short that are not
			}
			return book.Reconcile(now, cfg.AuditGrace)
		}, cfg.AuditWindow, tally.Errors, book.Skipped)
	}
	cons, err := consume.New(kc, cfg.EventsTopic, cfg.ConsumerGroup, dlq, consume.NewForwarder(processed), consume.Config{
		Retries: cfg.HandlerRetries, Backoff: cfg.HandlerBackoff, HandlerTimeout: cfg.HandlerTimeout,
		CommitInterval: cfg.CommitInterval, InstanceID: cfg.InstanceID,
	}, consumeOpts...)
	if err != nil {
		return err
	}

	api := admin.New(forgetOnLift{topic.publisher, ctrl}, topic.table,
		admin.Config{Token: cfg.AdminToken, AllowNoToken: cfg.AdminAllowNoToken},
		admin.WithMetrics(m),
		admin.WithMetricsHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})),
		admin.WithReadiness(admin.Check{Name: "consumer", Ready: func() error {
			if !cons.Ready() {
				return errors.New("not consuming")
			}
			return nil
		}}),
		admin.WithLogger(log))
	switch {
	case cfg.AdminToken == "" && cfg.AdminAllowNoToken:
		log.Warn("admin API open to anyone: ADMIN_TOKEN is not set and ADMIN_ALLOW_NO_TOKEN=true (local use only)")
	case cfg.AdminToken == "":
		log.Warn("admin writes disabled: ADMIN_TOKEN is not set (ADMIN_ALLOW_NO_TOKEN=true allows them without a token, for local use only)")
	}
	ln, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("listen on ADMIN_ADDR %s: %w", cfg.AdminAddr, err)
	}
	srv := &http.Server{
		Handler: api.Handler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 15 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
	}

	// The mirror heartbeats a second region measures its lag by (MIRROR_HEARTBEAT_TOPIC).
	var heartbeats *kafka.Writer
	if cfg.MirrorHeartbeatTopic != "" {
		if heartbeats, err = cluster.NewWriter(kc, cfg.MirrorHeartbeatTopic); err != nil {
			return err
		}
		defer cluster.CloseWriter(heartbeats)
	}

	// Two lifetimes: the consumer stops first, so that it can commit while the table,
	// the sweeper and the HTTP server are still up; the rest stops after it.
	bgCtx, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	consumeCtx, stopConsuming := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConsuming()

	bg := newGroup()
	for name, f := range topic.runners {
		bg.Go(name, func() error { return f(bgCtx) })
	}
	bg.Go("autothrottle ticker", func() error { return ctrl.Run(bgCtx, time.Second) })
	if tally != nil {
		bg.Go("audit beat", func() error {
			tally.Run(bgCtx)
			return nil
		})
		bg.Go("audit reconciliation", func() error { return auditBook.Run(bgCtx) })
	}
	if heartbeats != nil {
		bg.Go("mirror heartbeat", func() error {
			mirror.Beat(bgCtx, heartbeats, cfg.Region, time.Second, log.Named("mirror"))
			return nil
		})
	}
	bg.Go("admin server", func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	log.Info("admin API listening", zap.String("addr", ln.Addr().String()), zap.Bool("writes_enabled", api.WritesEnabled()))

	consumer := newGroup()
	var failure error
	if err := waitReady(ctx, topic.table, bg, log); err != nil {
		failure = err
	} else {
		consumer.Go("consumer", func() error { return cons.Run(consumeCtx) })
		log.Info("consuming", zap.String("topic", cfg.EventsTopic), zap.String("group", cfg.ConsumerGroup))
		select {
		case <-ctx.Done():
		case f := <-bg.Stopped():
			failure = f
		case f := <-consumer.Stopped():
			failure = f
		}
	}
	if failure != nil {
		log.Error("shutting down after a failure", zap.Error(failure))
	} else {
		log.Info("shutting down", zap.Duration("deadline", cfg.ShutdownTimeout))
	}

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	errs := []error{failure}
	// 1. Stop consuming: the event in hand is finished, handled offsets committed.
	stopConsuming()
	errs = append(errs, consumer.Wait(sctx))
	if tally != nil {
		// Nothing more is handled: the counts are final.
		errs = append(errs, tally.Flush(sctx, true))
	}
	// 2. Flush and close the Kafka clients (the writers are synchronous: nothing is
	// buffered, Close releases connections).
	errs = append(errs, within(sctx, "close kafka clients", func() error {
		return errors.Join(cluster.CloseWriter(processed), cluster.CloseWriter(dlq))
	}))
	// 3. Stop the HTTP server, the table, the sweeper and the ticker.
	errs = append(errs, srv.Shutdown(sctx))
	stopBG()
	errs = append(errs, bg.Wait(sctx))
	if topic.close != nil {
		errs = append(errs, within(sctx, "close throttle publisher", topic.close))
	}
	return errors.Join(errs...)
}

// ensureTopics creates the event topics and the throttle topic when missing.
func ensureTopics(ctx context.Context, kc cluster.Config, cfg config.Config, log *zap.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	var topics []kafka.TopicConfig
	for _, name := range []string{cfg.EventsTopic, cfg.ProcessedTopic, cfg.DLQTopic} {
		topics = append(topics, event.TopicConfig(name, cfg.EventsPartitions, cfg.ReplicationFactor, cfg.MinInsyncReplicas))
	}
	if cfg.AuditEnabled {
		topics = append(topics, audit.TopicConfig(cfg.AuditTopic, cfg.ReplicationFactor, cfg.MinInsyncReplicas))
	}
	if cfg.MirrorHeartbeatTopic != "" {
		topics = append(topics, mirror.TopicConfig(cfg.MirrorHeartbeatTopic, cfg.ReplicationFactor, cfg.MinInsyncReplicas))
	}
	created, err := cluster.CreateTopics(ctx, kc, topics...)
	if err != nil {
		return err
	}
	for _, t := range created {
		log.Info("topic created", zap.String("topic", t))
	}
	info, err := throttle.EnsureTopic(ctx, kc, cfg.TopicSpec())
	if err != nil {
		return err
	}
	for _, w := range info.Warnings {
		log.Warn("throttle topic", zap.String("topic", info.Name), zap.String("warning", w))
	}
	if info.Created {
		log.Info("topic created", zap.String("topic", info.Name), zap.Int("partitions", info.Partitions))
	}
	return nil
}

// waitReady waits until the table has caught up with the throttle topic, so that the
// controller renews existing throttles rather than setting duplicates.
func waitReady(ctx context.Context, table admin.Table, bg *group, log *zap.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for !table.Ready() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the throttle table to catch up: %w", ctx.Err())
		case err := <-bg.Stopped():
			return err
		case <-t.C:
		}
	}
	log.Info("throttle table caught up")
	return nil
}

// within runs f, giving up on it when ctx ends first.
func within(ctx context.Context, what string, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", what, ctx.Err())
	}
}
