package main

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// healthcheck turns the probe into the exit code, the reason on stderr. The probe
// itself (wildcard addresses, status codes, deadline) is tested in services/platform/healthcheck.
func TestHealthcheck(t *testing.T) {
	var status atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	tests := []struct {
		name   string
		status int
		want   int
	}{
		{"healthy", http.StatusOK, 0},
		{"unhealthy", http.StatusServiceUnavailable, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status.Store(int32(tt.status))
			var stderr strings.Builder
			got := healthcheck(":"+port, time.Second, &stderr)
			if got != tt.want {
				t.Errorf("with /healthz answering %d: got exit %d, want %d", tt.status, got, tt.want)
			}
			if wantReason := tt.want != 0; (stderr.Len() > 0) != wantReason {
				t.Errorf("with /healthz answering %d: got stderr %q, want a reason only when unhealthy", tt.status, stderr.String())
			}
		})
	}
}

// runHealthcheck probes ADMIN_ADDR, as the service reads it.
func TestRunHealthcheckReadsAdminAddr(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer srv.Close()
	t.Setenv("ADMIN_ADDR", srv.Listener.Addr().String())
	if got := runHealthcheck(); got != 0 {
		t.Errorf("got exit %d, want 0", got)
	}
	srv.Close()
	if got := runHealthcheck(); got != 1 {
		t.Errorf("with the server stopped: got exit %d, want 1", got)
	}
}

// A server that does not answer within the timeout is unhealthy.
func TestHealthcheckTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	defer srv.Close()
	defer close(release)
	start := time.Now()
	if got := healthcheck(srv.Listener.Addr().String(), 100*time.Millisecond, io.Discard); got != 1 {
		t.Errorf("got exit %d, want 1", got)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %s, want about the 100ms timeout", d)
	}
}
