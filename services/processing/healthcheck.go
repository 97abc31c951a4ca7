package main

import (
	"fmt"
	"os"
	"time"

	"github.com/sluice-dev/sluice/services/platform/envconfig"
	health "github.com/sluice-dev/sluice/services/platform/healthcheck"
	"github.com/sluice-dev/sluice/services/processing/internal/config"
)

// healthcheckTimeout bounds the whole probe, below Docker's default HEALTHCHECK timeout.
const healthcheckTimeout = 2 * time.Second

// runHealthcheck is `processing healthcheck`, the container image's HEALTHCHECK (see
// package healthcheck). It reads only ADMIN_ADDR (with the service's default) and
// returns the exit code.
func runHealthcheck() int {
	var cfg config.Config
	// Parse only: the probe must not fail on settings the running service already
	// accepted or defaulted (INSTANCE_ID, say).
	if err := envconfig.Load(&cfg); err != nil {
		fmt.Fprintf(os.Stderr, "processing healthcheck: %v\n", err)
		return 1
	}
	return healthcheck(cfg.AdminAddr, healthcheckTimeout, os.Stderr)
}

// healthcheck probes the server listening on addr and returns the exit code.
var healthcheck = health.Command
