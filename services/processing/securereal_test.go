package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pkg/throttle/throttletest/securitytest"
)

// TestRealSecureServices (issue 20): processing and ingestion run as processes on a
// secured cluster (SASL_SSL, SCRAM-SHA-512, the ACLs of deploy/acls/acls.yaml), each as
// its own principal, configured only by KAFKA_TLS_* and KAFKA_SASL_*. An operator sets a
// throttle through the admin API, ingestion enforces it (429), the operator lifts it and
// ingestion accepts again. An ingestion replica with a wrong password logs the
// authentication failure. No password appears in any log, /metrics or HTTP answer.
func TestRealSecureServices(t *testing.T) {
	env := securitytest.Start(t)
	bin := t.TempDir()
	ingestion := buildBinary(t, bin, "ingestion", "github.com/sluice-dev/sluice/services/ingestion")
	processing := buildBinary(t, bin, "processing", ".")

	adminAddr, ingestAddr := freeAddr(t), freeAddr(t)
	// Debug logs: the most a service ever writes, so the most room for a leak.
	_, procOut := startProcessOut(t, processing, append(env.Env(t, "processing"),
		"ADMIN_ADDR="+adminAddr, "ADMIN_TOKEN=tok", "INSTANCE_ID=secure-proc", "LOG_LEVEL=debug",
		"EVENTS_TOPIC_PARTITIONS=3", "THROTTLE_TOPIC_PARTITIONS=3",
		"MIN_EVENTS=1000000000", "AGE_MIN_EVENTS=1000000000"))
	_, ingestOut := startProcessOut(t, ingestion, append(env.Env(t, "ingestion"),
		"HTTP_ADDR="+ingestAddr, "REPLICA_ID=secure-in", "LOG_LEVEL=debug",
		"EVENTS_TOPIC_PARTITIONS=3", "THROTTLE_TOPIC_PARTITIONS=3"))
	admin, ingest := "http://"+adminAddr, "http://"+ingestAddr
	waitHTTP(t, admin+"/readyz", 90*time.Second)
	waitHTTP(t, ingest+"/readyz", 90*time.Second)

	var answers bytes.Buffer // every HTTP answer, for the leak check
	do := func(method, url, body string) int {
		t.Helper()
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer tok")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		fmt.Fprintf(&answers, "%s %s: %d %s\n", method, url, resp.StatusCode, b)
		return resp.StatusCode
	}
	post := func(customer string, i int) int {
		return do(http.MethodPost, ingest+"/v1/events", fmt.Sprintf(`[{"customer":%q,"id":"ev-%d"}]`, customer, i))
	}
	if got := post("acme", 0); got != http.StatusAccepted {
		t.Fatalf("event before the throttle: got %d, want 202", got)
	}

	if got := do(http.MethodPost, admin+"/v1/throttles", `{"customer":"acme","limit":1,"window":"1h","duration":"10m"}`); got/100 != 2 {
		t.Fatalf("set throttle: got %d, want 2xx\n%s", got, answers.String())
	}
	waitStatus(t, "acme throttled", func(i int) int { return post("acme", i) }, http.StatusTooManyRequests)
	if got := post("globex", 1); got != http.StatusAccepted {
		t.Errorf("event of an unthrottled customer: got %d, want 202", got)
	}
	if got := do(http.MethodDelete, admin+"/v1/throttles/acme", ""); got/100 != 2 {
		t.Fatalf("lift throttle: got %d, want 2xx\n%s", got, answers.String())
	}
	waitStatus(t, "acme lifted", func(i int) int { return post("acme", i) }, http.StatusAccepted)

	// A replica with a wrong password fails at start and says why, without the password.
	wrong := "wrong-" + env.Password(env.User(t, "ingestion"))
	badEnv := append(env.Env(t, "ingestion"), "KAFKA_SASL_PASSWORD="+wrong,
		"HTTP_ADDR="+freeAddr(t), "REPLICA_ID=secure-bad", "LOG_LEVEL=debug")
	_, badOut := startProcessOut(t, ingestion, badEnv)
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(badOut.String(), "SASL Authentication Failed") {
		if time.Now().After(deadline) {
			t.Fatalf("ingestion with a wrong password: no \"SASL Authentication Failed\" in its log within 60s:\n%s", badOut.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	for line := range strings.Lines(badOut.String()) {
		if strings.Contains(line, "SASL Authentication Failed") {
			t.Logf("wrong password, ingestion logs: %s", strings.TrimSpace(line))
			break
		}
	}

	do(http.MethodGet, admin+"/metrics", "")
	do(http.MethodGet, ingest+"/metrics", "")
	for what, text := range map[string]string{
		"processing log": procOut.String(), "ingestion log": ingestOut.String(),
		"wrong-password ingestion log": badOut.String(), "http answers and /metrics": answers.String(),
	} {
		for _, secret := range append(env.Secrets(), wrong) {
			if strings.Contains(text, secret) {
				t.Errorf("%s carries a password", what)
			}
		}
		if text == "" {
			t.Errorf("%s: empty, the leak check saw nothing", what)
		}
	}
}

// waitStatus calls try (with a growing counter) until it answers want, for 30s.
func waitStatus(t *testing.T, what string, try func(int) int, want int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for i := 100; ; i++ {
		got := try(i)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: got %d for 30s, want %d", what, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
