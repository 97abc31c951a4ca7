package main

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestHealthcheck(t *testing.T) {
	var status atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, closedPort, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()

	tests := []struct {
		name   string
		addr   string
		status int
		want   int
	}{
		{"wildcard listen address", ":" + port, http.StatusOK, 0},
		{"IPv4 wildcard", "0.0.0.0:" + port, http.StatusOK, 0},
		{"IPv6 wildcard", "[::]:" + port, http.StatusOK, 0},
		{"specific address", "127.0.0.1:" + port, http.StatusOK, 0},
		{"unhealthy", ":" + port, http.StatusServiceUnavailable, 1},
		{"nothing listening", ":" + closedPort, http.StatusOK, 1},
		{"no port", "localhost", http.StatusOK, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status.Store(int32(tt.status))
			if got := healthcheck(tt.addr, time.Second, io.Discard); got != tt.want {
				t.Errorf("healthcheck(%q) with /healthz answering %d: got exit %d, want %d", tt.addr, tt.status, got, tt.want)
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
