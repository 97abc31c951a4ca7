// Package healthcheck is the `healthcheck` subcommand of the Sluice services: the
// container images' HEALTHCHECK. The images have no shell and no curl, so each binary
// probes itself: it GETs /healthz from the address it serves on.
package healthcheck

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Command probes the server listening on addr within timeout and returns the process
// exit code: 0 when it is healthy, 1 otherwise, with the reason on stderr.
func Command(addr string, timeout time.Duration, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := Probe(ctx, addr); err != nil {
		fmt.Fprintf(stderr, "healthcheck: %v\n", err)
		return 1
	}
	return 0
}

// Probe GETs /healthz from the server listening on addr, a listen address such as
// ":8080", and returns nil when it answers 200. A wildcard listen address is probed on
// loopback. ctx bounds the whole probe, the reading of the body included; give it a
// deadline below the HEALTHCHECK's timeout.
func Probe(ctx context.Context, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", addr, err)
	}
	// A wildcard listen address is reached on loopback; a specific one only on itself.
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	url := "http://" + net.JoinHostPort(host, port) + "/healthz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err // already names the method and the URL
	}
	defer resp.Body.Close()
	// Read a little of the body so that a server that hangs after the headers fails the
	// probe within ctx, as the client's Timeout did.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
