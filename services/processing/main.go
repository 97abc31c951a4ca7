// Command processing consumes the events topic, detects customers that overload the
// pipeline, and publishes throttles for them to the compacted throttle topic. It also
// serves the operators' admin API, health probes and metrics.
//
// Configuration comes from environment variables: see internal/config.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"github.com/sluice-dev/sluice/services/processing/internal/config"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(runHealthcheck())
	}
	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintf(os.Stderr, "processing: %v\n", err)
		os.Exit(2)
	}
	log, err := cfg.Log.Logger()
	if err != nil {
		fmt.Fprintf(os.Stderr, "processing: %v\n", err)
		os.Exit(2)
	}
	log = log.With(zap.String("service", "processing"), zap.String("instance", cfg.InstanceID))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, log, cfg)
	stop()
	if err != nil {
		log.Error("stopped", zap.Error(err))
		_ = log.Sync()
		os.Exit(1)
	}
	log.Info("stopped")
	_ = log.Sync()
}
