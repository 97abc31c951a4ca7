package healthcheck_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/services/platform/healthcheck"
)

func TestProbe(t *testing.T) {
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
		name    string
		addr    string
		status  int
		healthy bool
	}{
		{"wildcard listen address", ":" + port, http.StatusOK, true},
		{"IPv4 wildcard", "0.0.0.0:" + port, http.StatusOK, true},
		{"IPv6 wildcard", "[::]:" + port, http.StatusOK, true},
		{"specific address", "127.0.0.1:" + port, http.StatusOK, true},
		{"unhealthy", ":" + port, http.StatusServiceUnavailable, false},
		{"nothing listening", ":" + closedPort, http.StatusOK, false},
		{"no port", "localhost", http.StatusOK, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status.Store(int32(tt.status))
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			err := healthcheck.Probe(ctx, tt.addr)
			if got := err == nil; got != tt.healthy {
				t.Errorf("Probe(%q) with /healthz answering %d: got error %v, want healthy %t", tt.addr, tt.status, err, tt.healthy)
			}
		})
	}
}

// A server that does not answer within the deadline is unhealthy.
func TestProbeTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	defer srv.Close()
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := healthcheck.Probe(ctx, srv.Listener.Addr().String()); err == nil {
		t.Errorf("got no error, want the deadline's")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %s, want about the 100ms deadline", d)
	}
}

func ExampleProbe() {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := healthcheck.Probe(ctx, srv.Listener.Addr().String()); err != nil {
		fmt.Println("unhealthy:", err)
		return
	}
	fmt.Println("healthy")
	// Output: healthy
}
