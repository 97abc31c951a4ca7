package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	tclog "github.com/testcontainers/testcontainers-go/log"
)

// skipReason, when set, skips every scenario: no usable Docker engine, or -short.
var skipReason string

func TestMain(m *testing.M) {
	// Ryuk, testcontainers' reaper, is an image: it cannot be pulled here, and this
	// suite removes what it starts itself (and what an interrupted run left, see
	// reapStale).
	os.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
	tclog.SetDefault(logger())
	flag.Parse()
	started := time.Now()

	switch {
	case testing.Short():
		skipReason = "the e2e suite starts containers: skipped in -short mode"
	default:
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := checkDocker(ctx)
		cancel()
		if err != nil {
			if os.Getenv("E2E_REQUIRE_DOCKER") == "1" {
				fmt.Fprintf(os.Stderr, "e2e: E2E_REQUIRE_DOCKER=1 but no usable Docker engine: %v\n", err)
				os.Exit(1)
			}
			skipReason = fmt.Sprintf("no usable Docker engine (%v); set E2E_REQUIRE_DOCKER=1 to fail instead of skipping", err)
			fmt.Println("e2e: skipping the suite:", skipReason)
		}
	}

	code := m.Run()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	if teardownShared(ctx) && code == 0 {
		fmt.Fprintln(os.Stderr, "e2e: the audit of the shared stack's run found events missing (see the summary)")
		code = 1
	}
	removeImages(ctx)
	cancel()
	printSummary(time.Since(started))
	os.Exit(code)
}

// requireDocker skips the test when the suite cannot run.
func requireDocker(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

// The shared stack: started by the first scenario that asks for it, removed by TestMain.
// Scenarios that restart the broker or the registry start stacks of their own.
var shared struct {
	once sync.Once
	s    *stack
	err  error
}

// sharedStack returns the stack the scenarios share, starting it on first use.
func sharedStack(t *testing.T) *stack {
	t.Helper()
	requireDocker(t)
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
		defer cancel()
		start := time.Now()
		shared.s, shared.err = startStack(ctx, "shared")
		if shared.err == nil {
			record("shared stack", "started in %s (images, broker, registry, probe, processing, 2 ingestion replicas)", since(start))
		}
	})
	if shared.err != nil {
		t.Fatalf("start the shared stack: %v", shared.err)
	}
	shared.s.logsOnFailure(t)
	return shared.s
}

// teardownShared removes the shared stack, after printing its audit. It reports whether
// the audit found events missing.
func teardownShared(ctx context.Context) (lost bool) {
	if shared.s != nil {
		lost = printAudit(ctx, shared.s)
		shared.s.close(ctx)
	}
	return lost
}

// The figures each scenario measured, printed again together at the end.
var summary struct {
	mu    sync.Mutex
	lines []string
}

// report logs what a scenario measured, to the test log and to stdout (so that it shows
// without -v too), and keeps it for the summary.
func report(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	t.Log(msg)
	record(t.Name(), "%s", msg)
}

func record(who, format string, args ...any) {
	line := fmt.Sprintf("%s: %s", who, fmt.Sprintf(format, args...))
	fmt.Println("e2e measured:", line)
	summary.mu.Lock()
	summary.lines = append(summary.lines, line)
	summary.mu.Unlock()
}

func printSummary(total time.Duration) {
	summary.mu.Lock()
	defer summary.mu.Unlock()
	if len(summary.lines) == 0 {
		return
	}
	lines := append([]string(nil), summary.lines...)
	sort.SliceStable(lines, func(i, j int) bool {
		return strings.SplitN(lines[i], ":", 2)[0] < strings.SplitN(lines[j], ":", 2)[0]
	})
	var b strings.Builder
	fmt.Fprintf(&b, "=== e2e summary (%s in all) ===\n", round(total))
	for _, l := range lines {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	fmt.Print("\n" + b.String())
	// go test shows a passing package's output only with -v: keep a copy.
	_ = os.MkdirAll(".build", 0o755)
	_ = os.WriteFile(filepath.Join(".build", "summary.txt"), []byte(b.String()), 0o644)
}

// since is the time since t, rounded for reading.
func since(t time.Time) string { return round(time.Since(t)) }

func round(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + round(-d)
	case d < 10*time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(10 * time.Millisecond).String()
}

// printAudit prints the audit of the shared stack's run, `throttlectl audit`, with every
// bucket settled: the services publish every second, so after a few seconds everything
// they counted is on the audit topic. It reports whether a bucket is short: events the
// scenarios had accepted never reached processing.
func printAudit(ctx context.Context, s *stack) (short bool) {
	time.Sleep(3 * time.Second)
	out, errOut, code, err := s.runThrottlectl(ctx, nil, "audit", "--since", "24h", "--grace", "0s")
	switch {
	case err != nil:
		record("audit", "throttlectl audit failed: %v", err)
		return false
	case code != 0:
		record("audit", "throttlectl audit exited %d: %s", code, strings.TrimSpace(string(errOut)))
	}
	// The whole table goes into the summary, which make test prints.
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		record("audit", "%s", l)
	}
	return code == 4 // throttlectl's exit code for a short bucket
}
