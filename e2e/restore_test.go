package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// TestRestoreIntoNewCluster: the state is lost for good (every container of the stack
// and its volumes removed: brokers, registry, services), and recovered by replay: a dump
// taken before with throttlectl is restored into a new cluster with its own registry,
// and every replica enforces the throttles again, each with its id, limit and expiry.
func TestRestoreIntoNewCluster(t *testing.T) {
	a := newStack(t, "restore-a")
	a.waitFleet(t, 2)
	prefix := uniq("restore")
	// 30 throttles, 10 of them lifted; one used up on both replicas.
	want := map[string]adminThrottle{}
	for i := range 30 {
		c := fmt.Sprintf("%s-%02d", prefix, i)
		want[c] = a.setThrottle(t, setRequest{Customer: c, Limit: 100, Window: "1m", Duration: "30m", Reason: "e2e: restore"})
	}
	for i := range 10 {
		c := fmt.Sprintf("%s-%02d", prefix, i)
		a.liftThrottle(t, c)
		delete(want, c)
	}
	enforced := a.enforced(t, prefix+"-enforced")
	want[enforced.Customer] = enforced
	waitAll(t, a, want)

	dump, _ := a.throttlectl(t, nil, "dump")
	lines := strings.Count(string(dump), "\n")
	report(t, "dump of the old cluster: %d records, %d bytes", lines, len(dump))
	lost := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	a.close(ctx)
	cancel()
	report(t, "every container of the old stack and its volumes removed in %s", since(lost))

	b := newStack(t, "restore-b")
	b.waitFleet(t, 2)
	start := time.Now()
	out, _ := b.throttlectl(t, dump, "restore", "/dump.jsonl")
	restored := time.Now()
	summary := lastLine(string(out))
	if !strings.Contains(summary, fmt.Sprintf("restored %d,", len(want))) {
		t.Errorf("restore: %q, want %d restored", summary, len(want))
	}
	seen := waitAll(t, b, want)
	report(t, "restore took %s (%s); every replica shows all %d throttles %s after it ended", round(restored.Sub(start)), summary, len(want), round(seen.Sub(restored)))
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, base := range b.bases(t) {
		n := 0
		for ; postEvent(ctx, base, enforced.Customer) != http.StatusTooManyRequests; n++ {
			if n > 2 {
				t.Fatalf("new replica %d: %d events of %s accepted, throttled to 2 an hour", i+1, n, enforced.Customer)
			}
		}
		report(t, "new replica %d refuses %s after %d accepted", i+1, enforced.Customer, n)
	}
}

// waitAll waits until every replica of s shows exactly want among the customers it
// names, with the same ids and expiries, and returns when.
func waitAll(t *testing.T, s *stack, want map[string]adminThrottle) time.Time {
	t.Helper()
	for i, base := range s.bases(t) {
		eventually(t, time.Minute, 100*time.Millisecond, fmt.Sprintf("replica %d shows every throttle", i+1), func(ctx context.Context) (bool, string) {
			for c, th := range want {
				got, found, err := replicaThrottle(ctx, base, c)
				if err != nil || !found || got.ID != th.ID || !got.ExpiresAt.Equal(th.ExpiresAt) || got.Limit != th.Limit {
					return false, fmt.Sprintf("%s: found %v, %+v, %v; want %s until %s", c, found, got.Record, err, th.ID, th.ExpiresAt)
				}
			}
			return true, ""
		})
	}
	return time.Now()
}

// throttlectl runs the operators' tool as a container on the stack's network, with
// input (if any) as /dump.jsonl, and returns its standard output and error; it fails
// t unless the tool exits 0.
func (s *stack) throttlectl(t *testing.T, input []byte, args ...string) (stdout, stderr []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stdout, stderr, code, err := s.runThrottlectl(ctx, input, args...)
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 {
		t.Fatalf("throttlectl %s: exit code %d\n%s", strings.Join(args, " "), code, stderr)
	}
	return stdout, stderr
}

// runThrottlectl runs throttlectl as throttlectl does, and returns its output and exit
// code.
func (s *stack) runThrottlectl(ctx context.Context, input []byte, args ...string) (stdout, stderr []byte, code int, err error) {
	req := testcontainers.ContainerRequest{
		Image:      s.img.throttlectl,
		Cmd:        args,
		Env:        map[string]string{"KAFKA_BROKERS": s.bootstrap(), "SCHEMA_REGISTRY_URL": "http://registry:8081"},
		WaitingFor: wait.ForExit().WithExitTimeout(time.Minute),
	}
	if input != nil {
		req.Files = []testcontainers.ContainerFile{{Reader: bytes.NewReader(input), ContainerFilePath: "/dump.jsonl", FileMode: 0o644}}
	}
	s.mu.Lock()
	s.replicas++ // a name of its own
	name := fmt.Sprintf("throttlectl-%d", s.replicas)
	s.mu.Unlock()
	n, err := s.run(ctx, name, "", "", req)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("throttlectl %s: %w", strings.Join(args, " "), err)
	}
	st, err := n.c.State(ctx)
	if err != nil {
		return nil, nil, 0, err
	}
	cli, err := docker(ctx)
	if err != nil {
		return nil, nil, 0, err
	}
	rc, err := cli.ContainerLogs(ctx, n.c.GetContainerID(), client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return nil, nil, 0, err
	}
	defer rc.Close()
	var out, errOut bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &errOut, rc); err != nil && err != io.EOF {
		return nil, nil, 0, err
	}
	return out.Bytes(), errOut.Bytes(), st.ExitCode, nil
}
