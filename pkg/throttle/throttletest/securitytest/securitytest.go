// Package securitytest starts a secured real Kafka cluster for tests: SASL_SSL with
// certificates made by the test, SCRAM-SHA-512 users, and the standard authorizer with the
// least-privilege ACLs of deploy/acls/acls.yaml, the file operators deploy. Its tests
// check Sluice on it; the services' tests can use it too.
//
// It needs what the real-Kafka suite needs (SLUICE_TEST_KAFKA=real, Java 17, the jars
// of make kafka) and starts a cluster of its own, after stopping the process's shared
// plain one (throttletest.ReleaseShared): run one such package at a time.
package securitytest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/sluice-dev/sluice/deploy/deploycheck"
	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest/kafkacluster"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest/registry"
	"github.com/sluice-dev/sluice/services/platform/audit"
	"github.com/sluice-dev/sluice/services/platform/event"
)

// Extra principals beside the programs of the ACL file.
const (
	// Admin is a super user: the operator who pre-creates the topics.
	Admin = "sluice-admin"
	// Stray is authenticated but holds no ACL: any other client of the cluster.
	Stray = "stray"
)

// Env is a running secured cluster with the deployed ACLs and Sluice's topics, and a
// Schema Registry on loopback.
type Env struct {
	Cluster     *kafkacluster.Cluster
	Principals  map[string]deploycheck.Principal // by program, from the ACL file
	RegistryURL string
	passwords   map[string]string // by user
}

// Start starts the environment for t, or skips t unless the real-Kafka suite runs.
func Start(t testing.TB) *Env {
	t.Helper()
	throttletest.RequireReal(t, "starts a secured 3-node Kafka cluster")
	// One cluster at a time on the machine: the plain one of earlier tests goes first.
	if err := throttletest.ReleaseShared(); err != nil {
		t.Fatal(err)
	}
	root := repoRoot(t)
	principals := deploycheck.ACLs(t, root)
	e := &Env{Principals: principals, passwords: map[string]string{}}
	for _, user := range append(e.users(), Admin, Stray) {
		e.passwords[user] = password()
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := kafkacluster.Start(ctx, kafkacluster.Config{Security: &kafkacluster.Security{
		Users: maps.Clone(e.passwords), SuperUsers: []string{Admin},
	}})
	if err != nil {
		t.Fatalf("start secured kafka: %v", err)
	}
	e.Cluster = c
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close secured kafka: %v", err)
		}
	})
	t.Logf("secured Kafka %s: 3 nodes up in %s (%s)", c.Version(), time.Since(start).Round(time.Millisecond), c.Dir())
	if err := c.CreateACLs(ctx, e.acls()...); err != nil {
		t.Fatal(err)
	}
	e.createTopics(t, ctx)

	// The registry keeps its schemas in the secured cluster as its own principal.
	regUser := e.User(t, "schema-registry")
	reg, err := registry.New(ctx, registry.WithBrokers(c.Brokers()...), registry.WithKafkaOpts(
		kgo.DialTLSConfig(c.TLSConfig()),
		kgo.SASL(scram.Auth{User: regUser, Pass: e.passwords[regUser]}.AsSha512Mechanism())))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(reg.Handler())
	t.Cleanup(func() { srv.Close(); reg.Close() })
	e.RegistryURL = srv.URL
	return e
}

// users are the users of the ACL file, in program order.
func (e *Env) users() []string {
	var out []string
	for _, p := range slices.Sorted(maps.Keys(e.Principals)) {
		out = append(out, e.Principals[p].User)
	}
	return out
}

// acls are the bindings of the ACL file.
func (e *Env) acls() []kafkacluster.ACL {
	var out []kafkacluster.ACL
	for _, prog := range slices.Sorted(maps.Keys(e.Principals)) {
		p := e.Principals[prog]
		for _, r := range p.ACLs {
			for _, op := range r.Operations {
				out = append(out, kafkacluster.ACL{
					Principal: "User:" + p.User, Resource: r.Resource, Name: r.Name,
					Prefixed: r.Pattern == "prefixed", Operation: op,
				})
			}
		}
	}
	return out
}

// createTopics creates Sluice's topics as the admin, as an operator would before the
// services start (the services hold no Create).
func (e *Env) createTopics(t testing.TB, ctx context.Context) {
	t.Helper()
	kc := e.KafkaUser(t, Admin)
	if _, err := throttle.EnsureTopic(ctx, kc, throttle.TopicSpec{Name: throttle.DefaultTopic, Partitions: 3}); err != nil {
		t.Fatalf("create throttle topic: %v", err)
	}
	var topics []kafka.TopicConfig
	for _, name := range []string{"events", "events.processed", "events.dlq"} {
		topics = append(topics, event.TopicConfig(name, 3, 3, 2))
	}
	topics = append(topics, audit.TopicConfig("sluice.audit", 3, 2))
	if _, err := cluster.CreateTopics(ctx, kc, topics...); err != nil {
		t.Fatalf("create event topics: %v", err)
	}
	if _, err := throttle.EnsureTopic(ctx, kc, throttle.TopicSpec{Name: "sluice.ingestion.members", Partitions: 1}); err != nil {
		t.Fatalf("create membership topic: %v", err)
	}
	for _, name := range []string{throttle.DefaultTopic, "events", "events.processed", "events.dlq", "sluice.ingestion.members", "sluice.audit"} {
		if err := e.Cluster.WaitLeaders(ctx, name, 0); err != nil {
			t.Fatal(err)
		}
	}
}

// User is the user name of program in the ACL file.
func (e *Env) User(t testing.TB, program string) string {
	t.Helper()
	p, ok := e.Principals[program]
	if !ok {
		t.Fatalf("no program %q in %s", program, deploycheck.ACLFile)
	}
	return p.User
}

// Password is user's password.
func (e *Env) Password(user string) string { return e.passwords[user] }

// Kafka is the client configuration of program's principal: SASL_SSL, trusting the
// cluster's CA.
func (e *Env) Kafka(t testing.TB, program string) cluster.Config {
	t.Helper()
	return e.KafkaUser(t, e.User(t, program))
}

// KafkaUser is KafkaAs with user's own password.
func (e *Env) KafkaUser(t testing.TB, user string) cluster.Config {
	t.Helper()
	return e.KafkaAs(t, user, e.passwords[user])
}

// KafkaAs is the client configuration of user with the given password (wrong ones too).
func (e *Env) KafkaAs(t testing.TB, user, password string) cluster.Config {
	t.Helper()
	mech, err := cluster.SASLMechanism(kafkacluster.Mechanism, user, password)
	if err != nil {
		t.Fatal(err)
	}
	return cluster.Config{Brokers: e.Cluster.Brokers(), ClientID: user, TLS: e.Cluster.TLSConfig(), SASL: mech}
}

// Env returns the environment variables that configure a Sluice program as program's
// principal (envconfig.Connection), with the CA file of the cluster.
func (e *Env) Env(t testing.TB, program string) []string {
	t.Helper()
	user := e.User(t, program)
	brokers := ""
	for i, b := range e.Cluster.Brokers() {
		if i > 0 {
			brokers += ","
		}
		brokers += b
	}
	return []string{
		"KAFKA_BROKERS=" + brokers,
		"KAFKA_TLS_ENABLED=true", "KAFKA_TLS_CA_FILE=" + e.Cluster.CAFile(),
		"KAFKA_SASL_MECHANISM=" + kafkacluster.Mechanism,
		"KAFKA_SASL_USERNAME=" + user, "KAFKA_SASL_PASSWORD=" + e.passwords[user],
		"SCHEMA_REGISTRY_URL=" + e.RegistryURL,
	}
}

// Secrets are every password of the environment, for tests that look for leaks.
func (e *Env) Secrets() []string { return slices.Collect(maps.Values(e.passwords)) }

func password() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "pw-" + hex.EncodeToString(b)
}

// repoRoot is the nearest directory above the working directory that holds the ACL
// file.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, deploycheck.ACLFile)); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no %s above the working directory", deploycheck.ACLFile)
		}
		dir = parent
	}
}

// String names the environment in failures.
func (e *Env) String() string { return fmt.Sprintf("secured kafka %v", e.Cluster.Brokers()) }
