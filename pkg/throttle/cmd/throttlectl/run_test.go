package main

import (
	"context"
	"flag"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	// Nothing listens there: a usage error must be found before anything is contacted.
	conn := []string{"--brokers", "127.0.0.1:1", "--registry", "http://127.0.0.1:1", "--timeout", "2s"}
	with := func(args ...string) []string { return append(append([]string{args[0]}, conn...), args[1:]...) }
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	tests := []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"no command", nil, "Usage: throttlectl COMMAND"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"help of unknown command", []string{"help", "frobnicate"}, `unknown command "frobnicate"`},
		{"unknown flag", with("list", "--frobnicate"), "flag provided but not defined: -frobnicate"},
		{"list with argument", with("list", "acme"), `unexpected arguments ["acme"]`},
		{"bad output", with("list", "--output", "yaml"), `--output "yaml": want text or json`},
		{"zero timeout", []string{"list", "--timeout", "0s"}, "timeout 0s: want a positive duration"},
		{"bad timeout", []string{"list", "--timeout", "soon"}, `invalid value "soon" for flag -timeout`},
		{"empty brokers", []string{"list", "--brokers", " , "}, "--brokers is empty"},
		{"empty topic", []string{"list", "--topic", ""}, "topic is empty"},
		{"get without customer", with("get"), "missing CUSTOMER"},
		{"get two customers", with("get", "acme", "globex"), "too many arguments"},
		{"get control character", with("get", "ac\nme"), "control character"},
		{"set without limit", with("set", "acme", "--for", "10m", "--reason", "r"), "--limit is required"},
		{"set limit without unit", with("set", "acme", "--limit", "20", "--for", "10m", "--reason", "r"), `limit "20": want N/UNIT`},
		{"set unknown unit", with("set", "acme", "--limit", "20/fortnight", "--for", "10m", "--reason", "r"), `window "fortnight"`},
		{"set negative limit", with("set", "acme", "--limit", "-1/min", "--for", "10m", "--reason", "r"), "not a whole number"},
		{"set sub-millisecond window", with("set", "acme", "--limit", "1/1500us", "--for", "10m", "--reason", "r"), "whole number of milliseconds"},
		{"set without duration", with("set", "acme", "--limit", "20/min", "--reason", "r"), "--for or --until is required"},
		{"set with both durations", with("set", "acme", "--limit", "20/min", "--for", "10m", "--until", future, "--reason", "r"), "exclusive"},
		{"set negative duration", with("set", "acme", "--limit", "20/min", "--for", "-10m", "--reason", "r"), "want a positive duration"},
		{"set until in the past", with("set", "acme", "--limit", "20/min", "--until", "2001-01-01T00:00:00Z", "--reason", "r"), "not after now"},
		{"set until not a time", with("set", "acme", "--limit", "20/min", "--until", "tomorrow", "--reason", "r"), "want RFC 3339"},
		{"set without reason", with("set", "acme", "--limit", "20/min", "--for", "10m"), "--reason is required"},
		{"set empty set-by", with("set", "acme", "--limit", "20/min", "--for", "10m", "--reason", "r", "--set-by", ""), "--set-by"},
		{"set bad shadow value", with("set", "acme", "--limit", "20/min", "--for", "10m", "--reason", "r", "--shadow=maybe"), "invalid boolean value"},
		{"lift without customer", with("lift"), "missing CUSTOMER"},
		{"lift empty customer", with("lift", ""), "customer is empty"},
		{"dump with argument", with("dump", "x"), "unexpected arguments"},
		{"restore without file", with("restore"), "missing FILE"},
		{"watch with argument", with("watch", "x"), "unexpected arguments"},
		{"ensure-topic negative partitions", with("ensure-topic", "--partitions", "-1"), "--partitions -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			r := invoke(t, t.Context(), "", tt.args...)
			if r.code != exitUsage {
				t.Fatalf("got exit %d, want %d; stderr:\n%s", r.code, exitUsage, r.stderr)
			}
			if !strings.Contains(r.stderr, tt.want) {
				t.Fatalf("got stderr %q, want it to contain %q", r.stderr, tt.want)
			}
			if r.stdout != "" {
				t.Fatalf("got stdout %q, want nothing", r.stdout)
			}
			if d := time.Since(start); d > time.Second {
				t.Fatalf("took %s, want a usage error at once (nothing contacted)", d)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--help"}, "Commands:"},
		{[]string{"-h"}, "Commands:"},
		{[]string{"help"}, "Commands:"},
		{[]string{"help", "set"}, "Usage: throttlectl set CUSTOMER --limit"},
	}
	for _, c := range commands() {
		tests = append(tests,
			struct {
				args []string
				want string
			}{[]string{c.name, "--help"}, "Usage: throttlectl " + c.name},
			struct {
				args []string
				want string
			}{[]string{c.name, "-h"}, "Exit codes: 0 ok, 1 error, 2 usage"})
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := invoke(t, t.Context(), "", tt.args...)
			if r.code != exitOK {
				t.Fatalf("got exit %d, want 0; stderr: %s", r.code, r.stderr)
			}
			if !strings.Contains(r.stdout, tt.want) {
				t.Fatalf("got stdout %q, want it to contain %q", r.stdout, tt.want)
			}
		})
	}
}

func TestParseLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		n       int64
		window  time.Duration
		wantErr bool
		format  string // formatLimit of the result
	}{
		{in: "20/min", n: 20, window: time.Minute, format: "20/min"},
		{in: "20/m", n: 20, window: time.Minute, format: "20/min"},
		{in: "20/MIN", n: 20, window: time.Minute, format: "20/min"},
		{in: "5/sec", n: 5, window: time.Second, format: "5/sec"},
		{in: "5/s", n: 5, window: time.Second, format: "5/sec"},
		{in: "1000/hour", n: 1000, window: time.Hour, format: "1000/hour"},
		{in: "1000/h", n: 1000, window: time.Hour, format: "1000/hour"},
		{in: "7/day", n: 7, window: 24 * time.Hour, format: "7/day"},
		{in: "100/30s", n: 100, window: 30 * time.Second, format: "100/30s"},
		{in: "100/1m30s", n: 100, window: 90 * time.Second, format: "100/1m30s"},
		{in: "100/1m", n: 100, window: time.Minute, format: "100/min"},
		{in: "0/min", n: 0, window: time.Minute, format: "0/min"},
		{in: "100/250ms", n: 100, window: 250 * time.Millisecond, format: "100/250ms"},
		{in: "20", wantErr: true},
		{in: "/min", wantErr: true},
		{in: "x/min", wantErr: true},
		{in: "-1/min", wantErr: true},
		{in: "20/", wantErr: true},
		{in: "20/0s", wantErr: true},
		{in: "20/-1m", wantErr: true},
		{in: "20/1500us", wantErr: true},
		{in: "20/week", wantErr: true},
	}
	for _, tt := range tests {
		n, w, err := parseLimit(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseLimit(%q): got error %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if tt.wantErr {
			continue
		}
		if n != tt.n || w != tt.window {
			t.Errorf("parseLimit(%q): got %d per %s, want %d per %s", tt.in, n, w, tt.n, tt.window)
		}
		if got := formatLimit(n, w); got != tt.format {
			t.Errorf("formatLimit(parseLimit(%q)): got %q, want %q", tt.in, got, tt.format)
		}
	}
}

func TestParseInterspersed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args    []string
		pos     []string
		limit   string
		shadow  bool
		wantErr bool
	}{
		{args: []string{"acme", "--limit", "1/s"}, pos: []string{"acme"}, limit: "1/s"},
		{args: []string{"--limit", "1/s", "acme"}, pos: []string{"acme"}, limit: "1/s"},
		{args: []string{"--shadow", "acme", "--limit", "1/s", "globex"}, pos: []string{"acme", "globex"}, limit: "1/s", shadow: true},
		{args: []string{"--limit", "1/s", "--", "-acme", "--shadow"}, pos: []string{"-acme", "--shadow"}, limit: "1/s"},
		{args: nil, pos: nil},
		{args: []string{"acme", "--nope"}, wantErr: true},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(discard{})
		limit := fs.String("limit", "", "")
		shadow := fs.Bool("shadow", false, "")
		pos, err := parseInterspersed(fs, tt.args)
		if (err != nil) != tt.wantErr {
			t.Errorf("%q: got error %v, want error %v", tt.args, err, tt.wantErr)
			continue
		}
		if tt.wantErr {
			continue
		}
		if !reflect.DeepEqual(pos, tt.pos) || *limit != tt.limit || *shadow != tt.shadow {
			t.Errorf("%q: got %q limit %q shadow %v, want %q limit %q shadow %v", tt.args, pos, *limit, *shadow, tt.pos, tt.limit, tt.shadow)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestUnreachableBroker: every command that talks to Kafka says which brokers did not
// answer and exits 1 within its timeout, for a refused connection and for a silent one.
func TestUnreachableBroker(t *testing.T) {
	t.Parallel()
	dump := t.TempDir() + "/dump.jsonl"
	writeFile(t, dump, "")
	refused := closedAddr(t)
	// A broker that accepts connections and never answers: the request hangs until the
	// deadline. (Not a non-routable address: a sandbox's transparent proxy may answer
	// those with HTTP, which kafka-go decodes as a huge array, spinning a core.)
	silent := blackHole(t)
	cmds := [][]string{
		{"list"}, {"get", "acme"}, {"set", "acme", "--limit", "1/s", "--for", "1m", "--reason", "r"},
		{"lift", "acme"}, {"dump"}, {"restore", dump}, {"watch"}, {"ensure-topic"},
	}
	for _, broker := range []string{refused, silent} {
		for _, cmd := range cmds {
			t.Run(broker+"/"+cmd[0], func(t *testing.T) {
				t.Parallel()
				args := append([]string{cmd[0], "--brokers", broker, "--registry", "http://127.0.0.1:1", "--timeout", "1s"}, cmd[1:]...)
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
				defer cancel()
				start := time.Now()
				r := invoke(t, ctx, "", args...)
				took := time.Since(start)
				if r.code != exitError {
					t.Fatalf("got exit %d, want %d; stderr:\n%s", r.code, exitError, r.stderr)
				}
				want := "kafka brokers " + broker + " unreachable"
				if !strings.Contains(r.stderr, want) {
					t.Fatalf("got stderr %q, want it to contain %q", r.stderr, want)
				}
				if took > 3*time.Second {
					t.Fatalf("took %s, want at most the 1s timeout (+ slack)", took)
				}
			})
		}
	}
}

// blackHole returns the address of a listener that accepts connections and never writes.
func blackHole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() { // ends when the listener is closed
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

func TestInterrupted(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	go func() { time.Sleep(200 * time.Millisecond); cancel() }()
	start := time.Now()
	r := invoke(t, ctx, "", "list", "--brokers", blackHole(t), "--timeout", "20s")
	if r.code != exitError || !strings.Contains(r.stderr, "throttlectl list: interrupted") {
		t.Fatalf("got exit %d stderr %q, want %d and an interrupted message", r.code, r.stderr, exitError)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %s after Ctrl-C, want it to stop at once", d)
	}
}
