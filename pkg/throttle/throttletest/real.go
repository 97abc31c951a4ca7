package throttletest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle/throttletest/kafkacluster"
)

// EnvBackend chooses the Kafka side of every Stack of a test process: unset or "kfake"
// for the in-process broker, "real" for a real Apache Kafka cluster of three KRaft nodes
// (Java 17 and the jars of `make kafka`; see kafkacluster.FindLibs). `make test-kafka`
// sets it. The registry is package registry (srfake behind it) either way.
const EnvBackend = "SLUICE_TEST_KAFKA"

// Real reports whether Stacks run on real Apache Kafka.
func Real() bool { return os.Getenv(EnvBackend) == "real" }

func checkBackend() error {
	switch v := os.Getenv(EnvBackend); v {
	case "", "kfake", "real":
		return nil
	default:
		return fmt.Errorf("%s=%q: want real or kfake", EnvBackend, v)
	}
}

// RequireKfake skips the test on real Kafka: it needs what only the in-process broker
// offers (compaction on demand, request hooks, an instant restart). why says what.
func RequireKfake(tb testing.TB, why string) {
	tb.Helper()
	if Real() {
		tb.Skipf("kfake only: %s", why)
	}
}

// RequireReal skips the test unless Stacks run on real Kafka (make test-kafka).
func RequireReal(tb testing.TB, why string) {
	tb.Helper()
	if !Real() {
		tb.Skipf("real Kafka only (%s=real, make test-kafka): %s", EnvBackend, why)
	}
}

// Main runs a package's tests and then stops the real cluster, if they started one:
//
//	func TestMain(m *testing.M) { throttletest.Main(m) }
//
// It is optional: without it the cluster's JVMs die with the test process (see
// kafkacluster), and the next cluster started on the machine removes their data.
func Main(m *testing.M) {
	code := m.Run()
	if err := shared.close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

// shared is the real cluster of this test process: started by the first Stack that
// needs it, kept for the next ones (a start costs seconds, not milliseconds).
//
// Stacks share it: parallel tests each see the topics they made, and when the last open
// Stack closes, the cluster is reset (topics, groups, broker defaults deleted), so the
// next test starts on an empty cluster as it would on a fresh kfake. A Stack that stops
// or kills nodes first waits to hold the cluster alone, and new Stacks wait until it
// closes; the nodes it stopped are started again then.
var shared = &sharedCluster{changed: make(chan struct{})}

type sharedCluster struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced when members, waiting or alone change
	cluster *kafkacluster.Cluster
	err     error // why it could not start; every later Stack fails with it
	dirty   bool  // a reset failed: retried before the next Stack
	members int   // open Stacks
	waiting *Stack
	alone   *Stack
}

// waitTimeout bounds how long a Stack waits for others to close: a wait longer than any
// test means two Stacks wait for each other (a test holding a Stack while its subtest
// stops nodes on another).
const waitTimeout = 10 * time.Minute

// wait releases mu until the state changes or the deadline passes.
func (sh *sharedCluster) wait(deadline time.Time, what string) error {
	ch := sh.changed
	sh.mu.Unlock()
	defer sh.mu.Lock()
	select {
	case <-ch:
		return nil
	case <-time.After(time.Until(deadline)):
		return fmt.Errorf("throttletest: waited %s for %s (do two Stacks of this process wait for each other?)", waitTimeout, what)
	}
}

func (sh *sharedCluster) notify() {
	close(sh.changed)
	sh.changed = make(chan struct{})
}

// join adds s to the cluster's members, starting the cluster first if need be. It
// reports how long the start took when it was s's to do.
func (sh *sharedCluster) join(s *Stack) (*kafkacluster.Cluster, time.Duration, error) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	deadline := time.Now().Add(waitTimeout)
	for sh.alone != nil || sh.waiting != nil {
		if err := sh.wait(deadline, "a Stack that stops brokers to close"); err != nil {
			return nil, 0, err
		}
	}
	var took time.Duration
	switch {
	case sh.err != nil:
		return nil, 0, sh.err
	case sh.cluster == nil:
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		start := time.Now()
		sh.cluster, sh.err = kafkacluster.Start(ctx, kafkacluster.Config{})
		if sh.err != nil {
			sh.err = fmt.Errorf("start real kafka cluster: %w", sh.err)
			return nil, 0, sh.err
		}
		took = time.Since(start)
	case sh.dirty && sh.members == 0:
		if err := sh.restore(); err != nil {
			return nil, 0, err
		}
	}
	sh.members++
	return sh.cluster, took, nil
}

// holdAlone makes s the only Stack on the cluster until it leaves: it waits for every
// other member to leave, and keeps new ones out.
func (sh *sharedCluster) holdAlone(s *Stack) error {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.alone == s {
		return nil
	}
	deadline := time.Now().Add(waitTimeout)
	for sh.waiting != nil && sh.waiting != s {
		if err := sh.wait(deadline, "another Stack that stops brokers to close"); err != nil {
			return err
		}
	}
	sh.waiting = s
	sh.notify()
	for sh.members > 1 {
		if err := sh.wait(deadline, "the other Stacks of this process to close"); err != nil {
			sh.waiting = nil
			sh.notify()
			return err
		}
	}
	sh.waiting, sh.alone = nil, s
	sh.notify()
	return nil
}

// leave removes s; the last member to leave resets the cluster.
func (sh *sharedCluster) leave(s *Stack) error {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.members--
	if sh.alone == s {
		sh.alone = nil
	}
	defer sh.notify()
	if sh.members > 0 {
		return nil
	}
	sh.dirty = true
	return sh.restore()
}

// forgetConnections drops the connections kafka-go's DefaultTransport pools by address,
// which clients without a Transport of their own share. kfake gives every Stack new
// ports; the real cluster keeps its ports across tests and node restarts, and a pooled
// connection to a restarted node fails the next request with "unexpected EOF".
func forgetConnections() {
	if t, ok := kafka.DefaultTransport.(*kafka.Transport); ok {
		t.CloseIdleConnections()
	}
}

// restore starts any stopped node and resets the cluster. mu is held.
func (sh *sharedCluster) restore() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := sh.cluster.StartNodes(ctx); err != nil {
		return fmt.Errorf("restart stopped kafka nodes: %w", err)
	}
	if err := sh.cluster.WaitLeaders(ctx, "", 1); err != nil {
		return err
	}
	if err := sh.cluster.WaitGroupCoordinators(ctx); err != nil {
		return err
	}
	if err := sh.cluster.Reset(ctx); err != nil {
		return fmt.Errorf("reset kafka cluster: %w", err)
	}
	forgetConnections()
	sh.dirty = false
	return nil
}

func (sh *sharedCluster) close() error {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.cluster == nil {
		return nil
	}
	err := sh.cluster.Close()
	sh.cluster, sh.err = nil, fmt.Errorf("throttletest: the real kafka cluster was closed")
	return err
}

// ReleaseShared stops the shared real cluster of this process, if it runs and no Stack
// holds it, so that a test can start a cluster of its own (a secured one) without two
// running at once on the machine. The next Stack starts the shared cluster again.
func ReleaseShared() error {
	sh := shared
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.cluster == nil {
		return nil
	}
	if sh.members > 0 || sh.alone != nil || sh.waiting != nil {
		return fmt.Errorf("throttletest: %d Stacks still use the shared real cluster", sh.members)
	}
	err := sh.cluster.Close()
	sh.cluster, sh.err, sh.dirty = nil, nil, false
	sh.notify()
	forgetConnections()
	return err
}
