package main

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
	"github.com/sluice-dev/sluice/services/processing/internal/config"
)

// The service with the real throttle store: a flood becomes a throttle on the compacted
// topic, seen by an independent table (as an ingestion replica would), and operators set
// and lift throttles through the admin API.
func TestServiceWithRealThrottleStore(t *testing.T) {
	stack := throttletest.Start(t, throttletest.Options{})
	addr := freeAddr(t)
	for k, v := range map[string]string{
		"KAFKA_BROKERS": strings.Join(stack.Brokers(), ","), "SCHEMA_REGISTRY_URL": stack.RegistryURL(),
		"ADMIN_ADDR": addr, "ADMIN_TOKEN": "tok", "INSTANCE_ID": "proc-real",
		"COMMIT_INTERVAL": "50ms", "EVENTS_TOPIC_PARTITIONS": "3", "SHUTDOWN_TIMEOUT": "20s",
		"THROTTLE_TOPIC_PARTITIONS": "3",
	} {
		t.Setenv(k, v)
	}
	cfg, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- runWith(ctx, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), cfg, newThrottleTopic)
	}()

	waitFor := func(what string, cond func() bool) { t.Helper(); waitService(t, done, what, cond) }
	call := func(method, path, body string) int {
		req, _ := http.NewRequest(method, "http://"+addr+path, bytes.NewBufferString(body))
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitFor("readyz", func() bool { return call("GET", "/readyz", "") == http.StatusOK })

	// An ingestion replica's view of the topic.
	codec, err := throttle.NewCodec(throttle.RegistryConfig{URL: stack.RegistryURL()}, cfg.ThrottleTopic)
	if err != nil {
		t.Fatal(err)
	}
	table, err := throttle.NewTable(stack.Kafka(), cfg.ThrottleTopic, codec)
	if err != nil {
		t.Fatal(err)
	}
	tctx, tcancel := context.WithCancel(context.Background())
	tdone := make(chan struct{})
	go func() { _ = table.Run(tctx); close(tdone) }()
	defer func() { tcancel(); <-tdone }()

	flood(t, ctx, stack, cfg.EventsTopic)
	waitFor("acme throttled on the topic", func() bool { _, ok := table.Get("acme"); return ok })
	r, _ := table.Get("acme")
	if r.Limit != 20 || r.Window != time.Minute || r.Reason.Kind != throttle.ReasonAutomatic || r.SetBy != "proc-real" {
		t.Fatalf("got %+v, want 20/1m automatic by proc-real", r)
	}
	if d := r.ExpiresAt.Sub(r.CreatedAt); d != 10*time.Minute {
		t.Fatalf("got duration %s, want 10m", d)
	}
	for _, c := range table.Active() {
		if c.Customer != "acme" {
			t.Fatalf("got a throttle for %q, want only acme", c.Customer)
		}
	}

	if code := call("POST", "/v1/throttles", `{"customer":"globex","limit":5,"window":"1m","duration":"10m","reason":"by hand","mode":"shadow"}`); code != http.StatusCreated {
		t.Fatalf("POST: got %d, want 201", code)
	}
	waitFor("globex set by hand", func() bool { g, ok := table.Get("globex"); return ok && g.Mode == throttle.ModeShadow })
	if code := call("DELETE", "/v1/throttles/globex", ""); code != http.StatusNoContent {
		t.Fatalf("DELETE: got %d, want 204", code)
	}
	waitFor("globex lifted", func() bool { _, ok := table.Get("globex"); return !ok })

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("service did not stop within 30s")
	}
}
