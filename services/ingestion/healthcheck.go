package main

import (
	"fmt"
	"os"
	"time"

	"github.com/sluice-dev/sluice/services/ingestion/internal/config"
	"github.com/sluice-dev/sluice/services/platform/envconfig"
	health "github.com/sluice-dev/sluice/services/platform/healthcheck"
)

// healthcheckTimeout bounds the whole probe, below Docker's default HEALTHCHECK timeout.
const healthcheckTimeout = 2 * time.Second

// runHealthcheck is `ingestion healthcheck`, the container image's HEALTHCHECK (see
// package healthcheck). It reads only HTTP_ADDR (with the service's default) and
// returns the exit code.
func runHealthcheck() int {
	var cfg config.Config
	// Parse only, no Validate: the probe must not fail on settings the running service
	// already accepted or defaulted (REPLICA_ID, say).
	if err := envconfig.Load(&cfg); err != nil {
		fmt.Fprintf(os.Stderr, "ingestion healthcheck: %v\n", err)
		return 1
	}
	return healthcheck(cfg.HTTPAddr, healthcheckTimeout, os.Stderr)
}

// healthcheck probes the server listening on addr and returns the exit code.
var healthcheck = health.Command
