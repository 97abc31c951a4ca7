package securitytest_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/pkg/throttle/follow"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest/kafkacluster"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest/securitytest"
)

// TestSecureKafka runs every check on one secured cluster: a start costs tens of
// seconds on two cores, and the subtests do not disturb one another.
func TestSecureKafka(t *testing.T) {
	env := securitytest.Start(t)
	t.Run("PublisherAndTable", func(t *testing.T) { testPublisherAndTable(t, env) })
	t.Run("Refused", func(t *testing.T) { testRefused(t, env) })
	t.Run("IngestionCannotWriteThrottles", func(t *testing.T) { testIngestionCannotWriteThrottles(t, env) })
	t.Run("StrayCannotLift", func(t *testing.T) { testStrayCannotLift(t, env) })
	t.Run("RegistryStoresAsItsPrincipal", func(t *testing.T) { testRegistryPrincipal(t, env) })
}

func record(customer string) throttle.Record {
	now := time.Now()
	return throttle.Record{
		ID: "secure-" + customer, Customer: customer, Limit: 20, Window: time.Minute,
		CreatedAt: now, ExpiresAt: now.Add(10 * time.Minute),
		Reason: throttle.Reason{Kind: throttle.ReasonManual, Note: "secured cluster test"},
		SetBy:  "test",
	}
}

// startTable runs a table of the throttle topic as program's principal, ready.
func startTable(t *testing.T, env *securitytest.Env, program string) *throttle.Table {
	t.Helper()
	codec, err := throttle.NewCodec(throttle.RegistryConfig{URL: env.RegistryURL, Timeout: 5 * time.Second}, throttle.DefaultTopic)
	if err != nil {
		t.Fatal(err)
	}
	table, err := throttle.NewTable(env.Kafka(t, program), throttle.DefaultTopic, codec)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- table.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("table of %s: %v", program, err)
		}
	})
	wctx, wcancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer wcancel()
	if err := table.WaitReady(wctx); err != nil {
		t.Fatalf("table of %s ready: %v", program, err)
	}
	return table
}

func publisher(t *testing.T, env *securitytest.Env, kc cluster.Config) *throttle.Publisher {
	t.Helper()
	codec, err := throttle.NewCodec(throttle.RegistryConfig{URL: env.RegistryURL, Timeout: 5 * time.Second}, throttle.DefaultTopic)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := throttle.NewPublisher(kc, throttle.DefaultTopic, codec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	return pub
}

// waitLookup waits until the table's answer for customer is want.
func waitLookup(t *testing.T, table *throttle.Table, customer string, want bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, ok := table.Lookup(customer); ok == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lookup %q: got throttled=%v for 20s, want %v", customer, !want, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testPublisherAndTable: processing's principal sets and lifts; ingestion's principal
// reads, over SASL_SSL with the deployed ACLs only.
func testPublisherAndTable(t *testing.T, env *securitytest.Env) {
	table := startTable(t, env, "ingestion")
	pub := publisher(t, env, env.Kafka(t, "processing"))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := pub.Set(ctx, record("acme")); err != nil {
		t.Fatalf("set as processing: %v", err)
	}
	waitLookup(t, table, "acme", true)
	if r, _ := table.Lookup("acme"); r.Limit != 20 {
		t.Errorf("lookup acme: got limit %d, want 20", r.Limit)
	}
	if err := pub.Lift(ctx, "acme"); err != nil {
		t.Fatalf("lift as processing: %v", err)
	}
	waitLookup(t, table, "acme", false)

	// The operator's principal (throttlectl) may set and lift too.
	op := publisher(t, env, env.Kafka(t, "throttlectl"))
	if err := op.Set(ctx, record("globex")); err != nil {
		t.Fatalf("set as operator: %v", err)
	}
	waitLookup(t, table, "globex", true)
	if err := op.Lift(ctx, "globex"); err != nil {
		t.Fatalf("lift as operator: %v", err)
	}
	waitLookup(t, table, "globex", false)
}

// testRefused: a client the cluster must refuse fails at once with an error that names
// the cause, and never carries the password it was given.
func testRefused(t *testing.T, env *securitytest.Env) {
	user := env.User(t, "ingestion")
	wrong := "wrong-" + env.Password(user)
	untrusted, err := kafkacluster.UntrustedCAPEM()
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(untrusted)

	noSASL := env.Kafka(t, "ingestion")
	noSASL.SASL = nil
	badCA := env.Kafka(t, "ingestion")
	badCA.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	noTLS := env.Kafka(t, "ingestion")
	noTLS.TLS = nil

	for _, tc := range []struct {
		name string
		kc   cluster.Config
		want []string // each must appear in the error
		is   error
	}{
		{"wrong password", env.KafkaAs(t, user, wrong), []string{"SASL Authentication Failed"}, kafka.SASLAuthenticationFailed},
		{"untrusted CA", badCA, []string{"certificate signed by unknown authority"}, nil},
		{"no credentials", noSASL, []string{"EOF", "requires SASL", "KAFKA_SASL_MECHANISM"}, nil},
		{"no TLS", noTLS, []string{"EOF"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			start := time.Now()
			_, err := throttle.EnsureTopic(ctx, tc.kc, throttle.TopicSpec{Name: throttle.DefaultTopic, Partitions: 3})
			took := time.Since(start)
			if err == nil {
				t.Fatal("got no error, want the connection refused")
			}
			t.Logf("refused after %s: %v", took.Round(time.Millisecond), err)
			if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || took > 15*time.Second {
				t.Errorf("got %v after %s, want a refusal, not a timeout", err, took)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got error %q, want it to contain %q", err, w)
				}
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("got error %v, want errors.Is %v", err, tc.is)
			}
			for _, secret := range append(env.Secrets(), wrong) {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q carries a password", err)
				}
			}
		})
	}
}

// countRecords scans the throttle topic as the admin and counts its records.
func countRecords(t *testing.T, env *securitytest.Env) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	n := 0
	_, err := follow.Scan(ctx, env.KafkaUser(t, securitytest.Admin), throttle.DefaultTopic, func(kafka.Message) error {
		n++
		return nil
	})
	if err != nil {
		t.Fatalf("scan %s as admin: %v", throttle.DefaultTopic, err)
	}
	return n
}

// testIngestionCannotWriteThrottles: ingestion reads the throttle topic and may not write
// it; the broker refuses with TOPIC_AUTHORIZATION_FAILED and stores nothing.
func testIngestionCannotWriteThrottles(t *testing.T, env *securitytest.Env) {
	before := countRecords(t, env)
	pub := publisher(t, env, env.Kafka(t, "ingestion"))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err := pub.Set(ctx, record("initech"))
	if err == nil {
		t.Fatal("set as ingestion: got no error, want TOPIC_AUTHORIZATION_FAILED")
	}
	t.Logf("set as ingestion: %v", err)
	if !hasError(err, kafka.TopicAuthorizationFailed) {
		t.Errorf("set as ingestion: got %v, want kafka.TopicAuthorizationFailed", err)
	}
	if after := countRecords(t, env); after != before {
		t.Errorf("throttle topic: got %d records after the refused write, want %d", after, before)
	}
}

// testStrayCannotLift: a client without a write ACL on the throttle topic cannot lift a
// throttle: its tombstone is refused, nothing is stored, and every table keeps the
// throttle. A principal with no ACL at all is told the topic does not exist (Kafka hides
// topics a principal may not describe); one that may read it is told it may not write.
func testStrayCannotLift(t *testing.T, env *securitytest.Env) {
	table := startTable(t, env, "ingestion")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := publisher(t, env, env.Kafka(t, "processing")).Set(ctx, record("umbrella")); err != nil {
		t.Fatalf("set as processing: %v", err)
	}
	waitLookup(t, table, "umbrella", true)
	before := countRecords(t, env)

	for _, tc := range []struct {
		name string
		kc   cluster.Config
		want error
	}{
		{"no acl", env.KafkaUser(t, securitytest.Stray), kafka.UnknownTopicOrPartition},
		{"read only", env.Kafka(t, "ingestion"), kafka.TopicAuthorizationFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := publisher(t, env, tc.kc).Lift(ctx, "umbrella")
			if !hasError(err, tc.want) {
				t.Fatalf("lift: got %v, want %v", err, tc.want)
			}
			t.Logf("lift refused: %v", err)
			time.Sleep(500 * time.Millisecond) // room for a tombstone that should not exist to arrive
			if _, ok := table.Lookup("umbrella"); !ok {
				t.Error("lookup umbrella after the refused lift: got not throttled, want throttled")
			}
			if after := countRecords(t, env); after != before {
				t.Errorf("throttle topic: got %d records after the refused lift, want %d", after, before)
			}
		})
	}
}

// hasError reports whether err is target, or a kafka.WriteErrors holding it (kafka-go's
// WriteErrors has no Unwrap).
func hasError(err, target error) bool {
	if errors.Is(err, target) {
		return true
	}
	var we kafka.WriteErrors
	if errors.As(err, &we) {
		for _, e := range we {
			if errors.Is(e, target) {
				return true
			}
		}
	}
	return false
}

// testRegistryPrincipal: the registry keeps the schemas the programs registered in
// _schemas, as its own principal (the ACL file's schema-registry); a service principal
// may not write there.
func testRegistryPrincipal(t *testing.T, env *securitytest.Env) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cl := &kafka.Client{Addr: kafka.TCP(env.Cluster.Brokers()...), Transport: env.Kafka(t, "schema-registry").Transport()}
	resp, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{"_schemas": {kafka.LastOffsetOf(0)}}})
	if err != nil {
		t.Fatal(err)
	}
	if p := resp.Topics["_schemas"][0]; p.Error != nil || p.LastOffset < 1 {
		t.Fatalf("_schemas as the registry: end offset %d (%v), want the registered schema kept", p.LastOffset, p.Error)
	}
	w, err := cluster.NewWriter(env.Kafka(t, "processing"), "_schemas", cluster.WithRetries(1, time.Millisecond, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.CloseWriter(w)
	err = w.WriteMessages(ctx, kafka.Message{Key: []byte(`{"keytype":"SCHEMA"}`), Value: []byte("{}")})
	if !hasError(err, kafka.TopicAuthorizationFailed) && !hasError(err, kafka.UnknownTopicOrPartition) {
		t.Fatalf("write _schemas as processing: got %v, want refused", err)
	}
	t.Logf("write _schemas as processing: refused: %v", err)
}
