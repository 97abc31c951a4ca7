package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net"
	"reflect"
	"regexp"
	"runtime"
	"runtime/debug"
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
		{"unknown flag", with("list", "--frobnicate"), "flag provided but not defined: --frobnicate"},
		{"list with argument", with("list", "acme"), `unexpected arguments ["acme"]`},
		{"bad output", with("list", "--output", "yaml"), `--output "yaml": want text or json`},
		{"zero timeout", []string{"list", "--timeout", "0s"}, "timeout 0s: want a positive duration"},
		{"bad timeout", []string{"list", "--timeout", "soon"}, `invalid value "soon" for flag --timeout`},
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
		{"version with argument", []string{"version", "x"}, "unexpected arguments"},
		{"version with connection flags", []string{"version", "--brokers", "127.0.0.1:1"}, "flag provided but not defined: --brokers"},
		{"version bad output", []string{"version", "--output", "yaml"}, `--output "yaml": want text or json`},
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

// TestDeadlineIsTheCommands: against a broker that accepts connections and never
// answers, a command runs until its own deadline (--timeout, here above kafka-go's and
// the library's 5s connection bound) and says that the deadline ended it; nothing cuts
// it short.
func TestDeadlineIsTheCommands(t *testing.T) {
	t.Parallel()
	silent := blackHole(t)
	for _, cmd := range [][]string{{"list"}, {"ensure-topic"}} {
		t.Run(cmd[0], func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			start := time.Now()
			r := invoke(t, ctx, "", append(cmd, "--brokers", silent, "--registry", "http://127.0.0.1:1", "--timeout", "7s")...)
			took := time.Since(start)
			if r.code != exitError {
				t.Fatalf("got exit %d, want %d; stderr:\n%s", r.code, exitError, r.stderr)
			}
			if took < 6500*time.Millisecond || took > 12*time.Second {
				t.Fatalf("took %s, want the 7s of --timeout; stderr:\n%s", took, r.stderr)
			}
			if want := "unreachable within the 7s timeout"; !strings.Contains(r.stderr, want) {
				t.Fatalf("got stderr %q, want it to say %q", r.stderr, want)
			}
		})
	}
}

// TestRegistryDeadlineIsTheCommands: a publish waits for a registry that accepts
// connections and never answers until the command's deadline (here above the 5s default
// of SCHEMA_REGISTRY_TIMEOUT), then names the registry and the deadline.
func TestRegistryDeadlineIsTheCommands(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	registry := "http://" + blackHole(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	start := time.Now()
	r := invoke(t, ctx, "", "set", "acme", "--limit", "1/s", "--for", "1m", "--reason", "r",
		"--brokers", strings.Join(c.s.Brokers(), ","), "--registry", registry, "--topic", c.topic, "--timeout", "7s")
	took := time.Since(start)
	if r.code != exitError {
		t.Fatalf("got exit %d, want %d; stderr:\n%s", r.code, exitError, r.stderr)
	}
	if took < 6500*time.Millisecond || took > 12*time.Second {
		t.Fatalf("took %s, want the 7s of --timeout; stderr:\n%s", took, r.stderr)
	}
	if want := "schema registry " + registry + ": no answer within the 7s timeout"; !strings.Contains(r.stderr, want) {
		t.Fatalf("got stderr %q, want it to say %q", r.stderr, want)
	}
}

// singleDash is a long flag spelled with one dash, as flag.PrintDefaults and the flag
// package's errors spell them: "-brokers", not a dash inside a word ("comma-separated")
// nor a number ("-1").
var singleDash = regexp.MustCompile(`(^|[^-\w])-[a-zA-Z][\w-]+`)

// TestHelpSpellsFlagsWithTwoDashes: the help (of the tool, of every command, by -h, --help
// and help) and the usage errors spell flags as the usage lines and README do, --flag.
func TestHelpSpellsFlagsWithTwoDashes(t *testing.T) {
	t.Parallel()
	type run struct {
		args    []string
		code    int
		want    []string // in the output
		connect bool     // the output lists the connection flags
	}
	runs := []run{
		{args: []string{"--help"}, want: []string{"Commands:"}},
		{args: []string{"-h"}, want: []string{"Commands:"}},
		{args: []string{"help"}, want: []string{"Commands:"}},
		{args: nil, code: exitUsage, want: []string{"Commands:"}},
		{args: []string{"frobnicate"}, code: exitUsage, want: []string{"Commands:"}},
		{args: []string{"help", "set"}, want: []string{"--limit string", "--for duration", "--shadow\n", `--set-by string`}, connect: true},
		{args: []string{"ensure-topic", "--help"}, want: []string{"--partitions int"}, connect: true},
		{args: []string{"version", "--help"}, want: []string{"--output string"}},
		{args: []string{"list", "--frobnicate"}, code: exitUsage, want: []string{"flag provided but not defined: --frobnicate", "Run 'throttlectl list --help'"}},
		{args: []string{"list", "-frobnicate"}, code: exitUsage, want: []string{"flag provided but not defined: --frobnicate"}},
		{args: []string{"list", "--timeout", "soon"}, code: exitUsage, want: []string{`invalid value "soon" for flag --timeout`}},
		{args: []string{"set", "acme", "--shadow=maybe"}, code: exitUsage, want: []string{`invalid boolean value "maybe" for --shadow`}},
		{args: []string{"set", "acme", "--limit"}, code: exitUsage, want: []string{"flag needs an argument: --limit"}},
		{args: []string{"get"}, code: exitUsage, want: []string{"missing CUSTOMER"}},
	}
	for _, c := range commands() {
		for _, h := range []string{"-h", "--help", "-help"} {
			runs = append(runs, run{args: []string{c.name, h}, want: []string{"Flags:\n  --"}, connect: !c.offline})
		}
	}
	for _, tt := range runs {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			r := invoke(t, t.Context(), "", tt.args...)
			if r.code != tt.code {
				t.Fatalf("got exit %d, want %d; stderr:\n%s", r.code, tt.code, r.stderr)
			}
			out := r.stdout + r.stderr
			if m := singleDash.FindString(out); m != "" {
				t.Fatalf("got %q spelled with one dash in\n%s", strings.TrimSpace(m), out)
			}
			want := tt.want
			if tt.connect {
				want = append(want, "--brokers string", "--registry string", "--topic string", "--timeout duration")
			}
			for _, w := range want {
				if !strings.Contains(out, w) {
					t.Fatalf("got\n%s\nwant it to contain %q", out, w)
				}
			}
		})
	}
}

func TestDashed(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"flag provided but not defined: -x", "flag provided but not defined: --x"},
		{"flag needs an argument: -limit", "flag needs an argument: --limit"},
		{`invalid value "a \" -b" for flag -timeout: parse error`, `invalid value "a \" -b" for flag --timeout: parse error`},
		{`invalid boolean value "maybe" for -shadow: parse error`, `invalid boolean value "maybe" for --shadow: parse error`},
		{"invalid boolean flag shadow: oops", "invalid boolean flag --shadow: oops"},
		{"bad flag syntax: ---x", "bad flag syntax: ---x"},
	}
	for _, tt := range tests {
		if got := dashed(errors.New(tt.in)).Error(); got != tt.want {
			t.Errorf("dashed(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	r := invoke(t, t.Context(), "", "version")
	if r.code != exitOK || r.stderr != "" {
		t.Fatalf("version: got exit %d stderr %q, want 0 and nothing", r.code, r.stderr)
	}
	want := buildVersion(debug.ReadBuildInfo())
	if lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "throttlectl "+want.Version) ||
		!strings.HasSuffix(lines[0], ", "+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH) {
		t.Fatalf("version: got %q, want one line: throttlectl %s, … %s %s/%s", r.stdout, want.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	}
	r = invoke(t, t.Context(), "", "version", "--output", "json")
	got := jsonLines[map[string]any](t, r.stdout)
	if r.code != exitOK || len(got) != 1 || got[0]["version"] != want.Version || got[0]["go"] != runtime.Version() ||
		got[0]["platform"] != runtime.GOOS+"/"+runtime.GOARCH {
		t.Fatalf("version --output json: got exit %d stdout %q, want one object with version %q and go %q", r.code, r.stdout, want.Version, runtime.Version())
	}
}

// TestVersionIgnoresEnvironment: version reads no configuration, so a broken one does not
// stop it. Not parallel: it sets the process environment.
func TestVersionIgnoresEnvironment(t *testing.T) {
	t.Setenv("THROTTLECTL_TIMEOUT", "soon")
	t.Setenv("LOG_LEVEL", "loud")
	if r := invoke(t, t.Context(), "", "version"); r.code != exitOK || !strings.HasPrefix(r.stdout, "throttlectl ") {
		t.Fatalf("version with a malformed environment: got exit %d stdout %q stderr %q, want the version", r.code, r.stdout, r.stderr)
	}
}

func TestBuildVersion(t *testing.T) {
	t.Parallel()
	platform := runtime.GOOS + "/" + runtime.GOARCH
	modified, clean := true, false
	tests := []struct {
		name string
		bi   *debug.BuildInfo
		ok   bool
		want versionInfo
		text string
	}{
		{name: "no build info", want: versionInfo{Version: "(devel)", Go: runtime.Version(), Platform: platform},
			text: "throttlectl (devel), " + runtime.Version() + " " + platform},
		{name: "no version", ok: true, bi: &debug.BuildInfo{GoVersion: "go1.99.0"},
			want: versionInfo{Version: "(devel)", Go: "go1.99.0", Platform: platform},
			text: "throttlectl (devel), go1.99.0 " + platform},
		{name: "release", ok: true, bi: &debug.BuildInfo{GoVersion: "go1.99.0", Main: debug.Module{Path: "github.com/sluice-dev/sluice/pkg/throttle", Version: "v1.4.0"},
			Settings: []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
				{Key: "vcs.time", Value: "2026-01-02T15:04:05Z"}, {Key: "vcs.modified", Value: "false"}}},
			want: versionInfo{Version: "v1.4.0", Revision: "0123456789abcdef0123456789abcdef01234567", Time: "2026-01-02T15:04:05Z", Modified: &clean, Go: "go1.99.0", Platform: platform},
			text: "throttlectl v1.4.0, revision 0123456789abcdef0123456789abcdef01234567 from 2026-01-02T15:04:05Z, go1.99.0 " + platform},
		{name: "modified work tree", ok: true, bi: &debug.BuildInfo{GoVersion: "go1.99.0", Main: debug.Module{Version: "(devel)"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.time", Value: "2026-01-02T15:04:05Z"}, {Key: "vcs.modified", Value: "true"}}},
			want: versionInfo{Version: "(devel)", Revision: "abc", Time: "2026-01-02T15:04:05Z", Modified: &modified, Go: "go1.99.0", Platform: platform},
			text: "throttlectl (devel), revision abc from 2026-01-02T15:04:05Z (modified), go1.99.0 " + platform},
	}
	for _, tt := range tests {
		got := buildVersion(tt.bi, tt.ok)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %+v, want %+v", tt.name, got, tt.want)
		}
		if s := got.String(); s != tt.text {
			t.Errorf("%s: got text %q, want %q", tt.name, s, tt.text)
		}
	}
	b, err := json.Marshal(buildVersion(tests[3].bi, true))
	if want := `{"version":"(devel)","revision":"abc","time":"2026-01-02T15:04:05Z","modified":true,"go":"go1.99.0","platform":"` + platform + `"}`; err != nil || string(b) != want {
		t.Errorf("json: got %s %v, want %s", b, err, want)
	}
}
