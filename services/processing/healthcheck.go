package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/sluice-dev/sluice/pkg/throttle/envconfig"
	"github.com/sluice-dev/sluice/services/processing/internal/config"
)

// healthcheckTimeout bounds the whole probe, below Docker's default HEALTHCHECK timeout.
const healthcheckTimeout = 2 * time.Second

// runHealthcheck is `processing healthcheck`, the container image's HEALTHCHECK: the
// image has no shell and no curl, so the binary probes itself. It reads only ADMIN_ADDR
// (with the service's default) and returns the exit code.
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

// healthcheck GETs /healthz from the server listening on addr (a listen address such as
// ":8090") and returns 0 when it answers 200, 1 otherwise.
func healthcheck(addr string, timeout time.Duration, stderr io.Writer) int {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		fmt.Fprintf(stderr, "healthcheck: listen address %q: %v\n", addr, err)
		return 1
	}
	// A wildcard listen address is reached on loopback; a specific one only on itself.
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	url := "http://" + net.JoinHostPort(host, port) + "/healthz"
	resp, err := (&http.Client{Timeout: timeout}).Get(url)
	if err != nil {
		fmt.Fprintf(stderr, "healthcheck: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "healthcheck: GET %s: %s\n", url, resp.Status)
		return 1
	}
	return 0
}
