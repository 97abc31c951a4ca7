package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

func TestRunRefusesBadFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"stray argument", []string{"healthcheck"}, "unexpected arguments"},
		{"unknown mode", []string{"-mode", "everything"}, "-mode"},
		{"demo without services", []string{"-mode", "infra", "-demo"}, "-demo needs -mode all"},
		{"every interface, no advertised host", []string{"-mode", "broker", "-host", "0.0.0.0"}, "needs -advertised-host"},
		{"no compaction interval", []string{"-compact-every", "0s"}, "-compact-every"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run(context.Background(), tc.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run(%q): got %v, want an error containing %q", tc.args, err, tc.want)
			}
		})
	}
}

// start runs the program with args until the test ends, and returns the first line it
// prints that matches re, with its submatches.
func start(t *testing.T, args []string, re *regexp.Regexp) []string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, args, pw)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run(%q) returned %v, want nil on cancellation", args, err)
		}
	})
	found := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m:
				default:
				}
			}
		}
	}()
	select {
	case m := <-found:
		return m
	case err := <-done:
		t.Fatalf("run(%q) ended early: %v", args, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("run(%q) never printed a line matching %s", args, re)
	}
	return nil
}

func TestRegistryMode(t *testing.T) {
	m := start(t, []string{"-mode", "registry", "-registry-port", "0"},
		regexp.MustCompile(`^Schema Registry listening on (\S+) \(schema id (\d+)`))
	_, port, _ := net.SplitHostPort(m[1])
	resp, err := http.Get("http://127.0.0.1:" + port + "/subjects")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var subjects []string
	if err := json.NewDecoder(resp.Body).Decode(&subjects); err != nil {
		t.Fatal(err)
	}
	if want := throttle.Subject(throttle.DefaultTopic); len(subjects) != 1 || subjects[0] != want {
		t.Errorf("subjects: got %v, want [%s]: the throttle schema is registered first thing", subjects, want)
	}
	if m[2] != "1" {
		t.Errorf("schema id: got %s, want 1 (the id the records on a persisted topic carry)", m[2])
	}
}

func TestBrokerMode(t *testing.T) {
	m := start(t, []string{"-mode", "broker", "-host", "127.0.0.1", "-advertised-host", "localhost",
		"-kafka-port", "0", "-data-dir", t.TempDir()},
		regexp.MustCompile(`^Kafka broker listening on (\S+), advertised as (\S+) `))
	_, port, _ := net.SplitHostPort(m[1])
	if m[2] != "localhost:"+port {
		t.Errorf("advertised: got %s, want localhost:%s", m[2], port)
	}
	// Clients are sent to the advertised address.
	conn, err := kafka.Dial("tcp", m[1])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	brokers, err := conn.Brokers()
	if err != nil {
		t.Fatal(err)
	}
	if len(brokers) != 1 || brokers[0].Host != "localhost" {
		t.Errorf("metadata brokers: got %+v, want one, on host localhost", brokers)
	}
}
