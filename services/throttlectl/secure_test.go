package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest/securitytest"
)

// TestRealSecureThrottlectl (issue 20): throttlectl, configured only by the environment
// the operators' principal gets (KAFKA_TLS_*, KAFKA_SASL_*), sets, lists, lifts, dumps and
// restores over SASL_SSL on a secured cluster with the ACLs of deploy/acls/acls.yaml; the
// ingestion principal is refused the writes; no password reaches the output.
func TestRealSecureThrottlectl(t *testing.T) {
	env := securitytest.Start(t)
	as := func(program string) {
		for _, kv := range env.Env(t, program) {
			k, v, _ := strings.Cut(kv, "=")
			t.Setenv(k, v)
		}
	}
	runCmd := func(args ...string) result {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
		defer cancel()
		r := invoke(t, ctx, "", append(args, "--topic", throttle.DefaultTopic, "--timeout", "30s")...)
		for _, secret := range env.Secrets() {
			if strings.Contains(r.stdout+r.stderr, secret) {
				t.Fatalf("throttlectl %v printed a password", args)
			}
		}
		return r
	}
	must := func(args ...string) result {
		t.Helper()
		r := runCmd(args...)
		if r.code != exitOK {
			t.Fatalf("throttlectl %v: exit %d\nstdout %s\nstderr %s", args, r.code, r.stdout, r.stderr)
		}
		return r
	}

	as("throttlectl")
	must("set", "secure-acme", "--limit", "20/min", "--for", "10m", "--reason", "over SASL_SSL", "--set-by", "alice")
	if r := must("get", "secure-acme"); !strings.Contains(r.stdout, "secure-acme") {
		t.Fatalf("get: got %q, want the throttle", r.stdout)
	}
	dump := filepath.Join(t.TempDir(), "dump.jsonl")
	r := must("dump")
	if !strings.Contains(r.stdout, "secure-acme") {
		t.Fatalf("dump: got %q, want the throttle", r.stdout)
	}
	if err := os.WriteFile(dump, []byte(r.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	// Restore reads the topic and compares before it writes: the throttle is there.
	if r := must("restore", dump, "--output", "json"); !strings.Contains(r.stdout, `"unchanged":1`) {
		t.Fatalf("restore: got %q, want the throttle counted as already there", r.stdout)
	}

	// The ingestion principal may not write throttles.
	as("ingestion")
	r = runCmd("lift", "secure-acme")
	if r.code == exitOK || !strings.Contains(r.stderr, "Topic Authorization Failed") {
		t.Fatalf("lift as ingestion: exit %d, stderr %q; want refused with an authorization error", r.code, r.stderr)
	}
	as("throttlectl")
	if r := must("get", "secure-acme"); !strings.Contains(r.stdout, "secure-acme") {
		t.Fatalf("after the refused lift: got %q, want the throttle kept", r.stdout)
	}
	must("lift", "secure-acme")
	if r := runCmd("get", "secure-acme"); r.code == exitOK {
		t.Fatalf("get after lift: got exit 0 (%s), want not found", r.stdout)
	}
}
