package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/pkg/throttle/throttlejson"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestSetGetListLift(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)

	r := c.mustRun("list")
	if want := "no active throttles on topic " + c.topic; !strings.Contains(r.stdout, want) {
		t.Fatalf("list of an empty topic: got %q, want %q", r.stdout, want)
	}

	r = c.mustRun("set", "acme", "--limit", "20/min", "--for", "10m", "--reason", "runaway batch job", "--set-by", "alice", "--output", "json")
	set := jsonLines[throttlejson.Record](t, r.stdout)
	if len(set) != 1 || set[0].Customer != "acme" || set[0].Limit != 20 || set[0].WindowMS != 60000 || set[0].Mode != "enforce" ||
		set[0].SetBy != "alice" || set[0].Reason.Note != "runaway batch job" || set[0].Reason.Kind != "manual" || set[0].ID == "" {
		t.Fatalf("set --output json: got %+v, want acme 20/min enforce by alice", set)
	}
	if d := set[0].ExpiresAt.Sub(set[0].CreatedAt); d != 10*time.Minute {
		t.Fatalf("set --for 10m: got expiry %s after creation, want 10m", d)
	}
	until := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	r = c.mustRun("set", "--limit", "100/30s", "globex", "--until", until.Format(time.RFC3339), "--reason", "trial", "--shadow")
	if want := "set throttle for globex: 100/30s shadow until " + until.Format(time.RFC3339); !strings.Contains(r.stdout, want) {
		t.Fatalf("set text output: got %q, want it to contain %q", r.stdout, want)
	}

	r = c.mustRun("get", "acme", "--output", "json")
	got := jsonLines[throttlejson.Record](t, r.stdout)
	if len(got) != 1 || !reflect.DeepEqual(got[0], set[0]) {
		t.Fatalf("get acme: got %+v, want what set printed, %+v", got, set[0])
	}
	r = c.mustRun("get", "globex")
	for _, want := range []string{"customer: globex", "limit:    100/30s (100 events per 30s)", "mode:     shadow", "expires:  " + until.Format(time.RFC3339), "reason:   manual: trial"} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("get globex: got\n%s\nwant a line %q", r.stdout, want)
		}
	}

	r = c.mustRun("list")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "CUSTOMER") || !strings.HasPrefix(lines[1], "acme ") || !strings.HasPrefix(lines[2], "globex ") {
		t.Fatalf("list: got\n%s\nwant a header, acme, globex", r.stdout)
	}
	// Aligned: every column starts at the same byte on every line.
	if col := strings.Index(lines[0], "LIMIT"); strings.Index(lines[1], "20/min") != col || strings.Index(lines[2], "100/30s") != col {
		t.Fatalf("list: got misaligned columns\n%s", r.stdout)
	}
	r = c.mustRun("list", "--output", "json")
	all := jsonLines[[]throttlejson.Record](t, r.stdout)
	if len(all) != 1 || len(all[0]) != 2 || all[0][0].Customer != "acme" || all[0][1].Customer != "globex" || all[0][1].Mode != "shadow" {
		t.Fatalf("list --output json: got %+v, want acme and globex (shadow)", all)
	}

	r = c.mustRun("lift", "acme")
	if r.stdout != "lifted throttle of acme\n" {
		t.Fatalf("lift: got %q, want %q", r.stdout, "lifted throttle of acme\n")
	}
	r = c.run("get", "acme")
	if r.code != exitNotFound || !strings.Contains(r.stderr, `customer "acme" has no active throttle`) || r.stdout != "" {
		t.Fatalf("get after lift: got exit %d stdout %q stderr %q, want exit %d and a message on stderr", r.code, r.stdout, r.stderr, exitNotFound)
	}
	r = c.mustRun("list", "--output", "json")
	if all := jsonLines[[]throttlejson.Record](t, r.stdout); len(all[0]) != 1 || all[0][0].Customer != "globex" {
		t.Fatalf("list after lift: got %+v, want globex alone", all)
	}
}

func TestGetNotFound(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	c.publish(c.topic, aged(rec("expired", 1, time.Minute), time.Hour), rec("acme", 1, time.Hour))
	for _, customer := range []string{"nobody", "expired", "ACME"} {
		r := c.run("get", customer, "--output", "json")
		if r.code != exitNotFound || r.stdout != "" {
			t.Errorf("get %s: got exit %d stdout %q, want exit %d and no output", customer, r.code, r.stdout, exitNotFound)
		}
	}
}

func TestMissingTopic(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	dump := t.TempDir() + "/dump.jsonl"
	writeFile(t, dump, "")
	for _, cmd := range [][]string{{"list"}, {"get", "acme"}, {"set", "acme", "--limit", "1/s", "--for", "1m", "--reason", "r"}, {"lift", "acme"}, {"dump"}, {"restore", dump}, {"watch"}} {
		r := c.runIn("no-such-topic", "", cmd[0], cmd[1:]...)
		want := "topic no-such-topic does not exist; create it with throttlectl ensure-topic"
		if r.code != exitError || !strings.Contains(r.stderr, want) {
			t.Errorf("%s: got exit %d stderr %q, want exit %d and %q", cmd[0], r.code, r.stderr, exitError, want)
		}
	}
}

// createDeleteTopic makes a topic with cleanup.policy=delete, as a hand-made or
// auto-created topic would be.
func createDeleteTopic(t *testing.T, c *testCluster, name string) {
	t.Helper()
	cl := &kafka.Client{Addr: kafka.TCP(c.s.Brokers()...)}
	resp, err := cl.CreateTopics(t.Context(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: name, NumPartitions: 1, ReplicationFactor: 1,
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: "delete"}},
	}}})
	if err != nil || resp.Errors[name] != nil {
		t.Fatalf("create topic %s: %v %v", name, err, resp.Errors)
	}
	// Every broker must know the topic before the commands ask any of them.
	if err := cluster.WaitForTopics(t.Context(), c.s.Kafka(), name); err != nil {
		t.Fatal(err)
	}
}

func TestNotCompactedRefused(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	topic := topicName(t, "-delete")
	createDeleteTopic(t, c, topic)
	dump := t.TempDir() + "/dump.jsonl"
	writeFile(t, dump, "")
	for _, cmd := range [][]string{{"list"}, {"get", "acme"}, {"set", "acme", "--limit", "1/s", "--for", "1m", "--reason", "r"}, {"lift", "acme"}, {"restore", dump}, {"watch"}, {"ensure-topic"}} {
		r := c.runIn(topic, "", cmd[0], cmd[1:]...)
		if r.code != exitError || !strings.Contains(r.stderr, throttle.ErrNotCompacted.Error()) || !strings.Contains(r.stderr, `cleanup.policy="delete"`) {
			t.Errorf("%s: got exit %d stderr %q, want exit %d and %q", cmd[0], r.code, r.stderr, exitError, throttle.ErrNotCompacted)
		}
	}
	// Nothing was written by set, lift or restore.
	if r := c.runIn(topic, "", "dump"); r.stdout != "" {
		t.Fatalf("dump after refused writes: got %q, want no records", r.stdout)
	}
	// dump salvages what is there, with a warning.
	c.put(topic, c.msg(0, rec("acme", 1, time.Hour)))
	r := c.runIn(topic, "", "dump")
	if r.code != exitOK || !strings.Contains(r.stderr, "warning: ") || len(jsonLines[dumpLine](t, r.stdout)) != 1 {
		t.Fatalf("dump of a non-compacted topic: got exit %d stdout %q stderr %q, want one record and a warning", r.code, r.stdout, r.stderr)
	}
}

func TestCheckTopicWrapsErrNotCompacted(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	topic := topicName(t, "-delete")
	createDeleteTopic(t, c, topic)
	s := &session{cfg: config{Timeout: 5 * time.Second}}
	_, err := s.checkTopic(t.Context(), c.s.Kafka(), topic)
	if !errors.Is(err, throttle.ErrNotCompacted) {
		t.Fatalf("got %v, want an error wrapping throttle.ErrNotCompacted", err)
	}
	if _, err := s.checkTopic(t.Context(), c.s.Kafka(), c.topic); err != nil {
		t.Fatalf("compacted topic: got %v, want nil", err)
	}
}

func TestRegistryUnreachable(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	c.publish(c.topic, rec("acme", 1, time.Hour))
	c.s.StopRegistry()
	for _, cmd := range [][]string{{"list"}, {"dump"}, {"set", "acme", "--limit", "1/s", "--for", "1m", "--reason", "r"}} {
		args := append(append([]string{cmd[0]}, c.flags("")...), append(cmd[1:], "--timeout", "2s")...)
		start := time.Now()
		r := invoke(t, t.Context(), "", args...)
		if r.code != exitError || !strings.Contains(r.stderr, "schema registry "+c.s.RegistryURL()) {
			t.Errorf("%s: got exit %d stderr %q, want exit %d naming the registry", cmd[0], r.code, r.stderr, exitError)
		}
		if d := time.Since(start); d > 6*time.Second {
			t.Errorf("%s: took %s, want about the 2s timeout", cmd[0], d)
		}
	}
}

func TestEnsureTopic(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	topic := topicName(t, "-new")
	r := c.runIn(topic, "", "ensure-topic", "--partitions", "3")
	rf := min(3, len(c.s.Brokers())) // capped by the cluster: one kfake broker, three real nodes
	if r.code != exitOK || r.stdout != fmt.Sprintf("topic %s created: 3 partitions, replication factor %d\n", topic, rf) {
		t.Fatalf("ensure-topic: got exit %d stdout %q stderr %q, want the topic created", r.code, r.stdout, r.stderr)
	}
	r = c.runIn(topic, "", "ensure-topic", "--partitions", "4", "--output", "json")
	got := jsonLines[map[string]any](t, r.stdout)
	if r.code != exitOK || len(got) != 1 || got[0]["created"] != false || got[0]["partitions"] != float64(3) || !strings.Contains(r.stderr, "has 3 partitions, expected 4") {
		t.Fatalf("ensure-topic again: got exit %d stdout %q stderr %q, want it found, 3 partitions, a warning", r.code, r.stdout, r.stderr)
	}
	c.runIn(topic, "", "set", "acme", "--limit", "1/s", "--for", "1m", "--reason", "r")
	if a := c.active(topic); len(a) != 1 {
		t.Fatalf("set on the created topic: got %d active, want 1", len(a))
	}
}

// TestEnvironment: the services' variables configure throttlectl; flags override them.
// Not parallel: it sets the process environment.
func TestEnvironment(t *testing.T) {
	c := newCluster(t, 1)
	c.publish(c.topic, rec("acme", 7, time.Hour))
	t.Setenv("KAFKA_BROKERS", strings.Join(c.s.Brokers(), ","))
	t.Setenv("SCHEMA_REGISTRY_URL", c.s.RegistryURL())
	t.Setenv("THROTTLE_TOPIC", c.topic)
	t.Setenv("THROTTLECTL_TIMEOUT", "20s")
	r := invoke(t, t.Context(), "", "get", "acme", "--output", "json")
	if got := jsonLines[throttlejson.Record](t, r.stdout); r.code != exitOK || len(got) != 1 || got[0].Limit != 7 {
		t.Fatalf("get from the environment: got exit %d stdout %q stderr %q, want acme's limit 7", r.code, r.stdout, r.stderr)
	}
	t.Setenv("KAFKA_BROKERS", closedAddr(t))
	if r := invoke(t, t.Context(), "", "get", "acme", "--brokers", strings.Join(c.s.Brokers(), ",")); r.code != exitOK {
		t.Fatalf("--brokers over KAFKA_BROKERS: got exit %d stderr %q, want 0", r.code, r.stderr)
	}
	t.Setenv("THROTTLECTL_TIMEOUT", "soon")
	if r := invoke(t, t.Context(), "", "list"); r.code != exitUsage || !strings.Contains(r.stderr, "configuration") || !strings.Contains(r.stderr, `"soon"`) {
		t.Fatalf("malformed environment: got exit %d stderr %q, want %d naming the value", r.code, r.stderr, exitUsage)
	}
	t.Setenv("THROTTLECTL_TIMEOUT", "20s")
	t.Setenv("LOG_LEVEL", "loud")
	if r := invoke(t, t.Context(), "", "list"); r.code != exitUsage || !strings.Contains(r.stderr, "LOG_LEVEL") {
		t.Fatalf("bad LOG_LEVEL: got exit %d stderr %q, want %d naming the variable", r.code, r.stderr, exitUsage)
	}
}

func TestDump(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	acme := rec("acme", 20, time.Hour)
	auto := rec("globex", 5, time.Hour)
	auto.Reason = throttle.Reason{Kind: throttle.ReasonAutomatic, Metric: "lag_seconds", Value: 42.5, Note: "lagging"}
	auto.Mode = throttle.ModeShadow
	good := c.msg(0, acme)
	binKey := kafka.Message{Partition: 2, Key: []byte{0xff, 0xfe}, Value: []byte("junk!")}
	c.put(c.topic,
		good,
		tomb(0, "acme", kafka.Header{Key: throttle.HeaderExpires, Value: []byte(acme.ID)}),
		kafka.Message{Partition: 0, Key: []byte("bad"), Value: append([]byte{7}, good.Value[1:]...)},
		kafka.Message{Partition: 0, Key: []byte("short"), Value: []byte{0, 0}},
		kafka.Message{Partition: 0, Key: []byte("empty"), Value: []byte{}},
		kafka.Message{Partition: 0, Key: []byte("someone-else"), Value: good.Value},
		c.msg(2, auto),
		binKey,
	) // partition 1 stays empty
	r := c.mustRun("dump")
	lines := jsonLines[dumpLine](t, r.stdout)
	if len(lines) != 8 {
		t.Fatalf("got %d lines, want 8:\n%s", len(lines), r.stdout)
	}
	if want := "dumped 8 records of topic " + c.topic + " (partition:first-end offsets 0:0-6 1:0-0 2:0-2)"; !strings.Contains(r.stderr, want) {
		t.Fatalf("got stderr %q, want %q", r.stderr, want)
	}
	raw := func(b []byte) *string { s := base64.StdEncoding.EncodeToString(b); return &s }
	key := func(s string) *string { return &s }
	acmeJSON, autoJSON := throttlejson.From(acme), throttlejson.From(auto)
	want := []dumpLine{
		{Partition: 0, Offset: 0, Key: key("acme"), Headers: []dumpHeader{}, Value: &acmeJSON, SchemaID: 1},
		{Partition: 0, Offset: 1, Key: key("acme"), Headers: []dumpHeader{{Key: throttle.HeaderExpires, Value: acme.ID}}, Tombstone: true},
		{Partition: 0, Offset: 2, Key: key("bad"), Headers: []dumpHeader{}, Poison: "bad_magic", Raw: raw(append([]byte{7}, good.Value[1:]...))},
		{Partition: 0, Offset: 3, Key: key("short"), Headers: []dumpHeader{}, Poison: "truncated", Raw: raw([]byte{0, 0})},
		{Partition: 0, Offset: 4, Key: key("empty"), Headers: []dumpHeader{}, Poison: "truncated", Raw: raw([]byte{})},
		{Partition: 0, Offset: 5, Key: key("someone-else"), Headers: []dumpHeader{}, Poison: "key_mismatch", Raw: raw(good.Value)},
		{Partition: 2, Offset: 0, Key: key("globex"), Headers: []dumpHeader{}, Value: &autoJSON, SchemaID: 1},
		{Partition: 2, Offset: 1, KeyBase64: base64.StdEncoding.EncodeToString([]byte{0xff, 0xfe}), Headers: []dumpHeader{}, Poison: "bad_magic", Raw: raw([]byte("junk!"))},
	}
	for i := range lines {
		if lines[i].Timestamp.IsZero() || time.Since(lines[i].Timestamp) > time.Minute {
			t.Errorf("line %d: got timestamp %s, want the time it was produced", i, lines[i].Timestamp)
		}
		if (lines[i].Poison != "") != (lines[i].Error != "") {
			t.Errorf("line %d: got poison %q with error %q, want an error exactly for poison", i, lines[i].Poison, lines[i].Error)
		}
		lines[i].Timestamp, lines[i].Error = time.Time{}, ""
		if !reflect.DeepEqual(lines[i], want[i]) {
			t.Errorf("line %d: got %+v, want %+v", i, lines[i], want[i])
		}
	}
}

// TestDumpAfterCompaction: compaction moves the log start and leaves gaps of offsets;
// the dump reads what is left and ends.
func TestDumpAfterCompaction(t *testing.T) {
	t.Parallel()
	throttletest.RequireKfake(t, "compaction on demand (Compact) and kfake's exact offsets after it")
	c := newCluster(t, 1)
	c.put(c.topic, c.msg(0, rec("globex", 11, time.Hour)))
	for v := int64(1); v <= 5; v++ {
		c.put(c.topic, c.msg(0, rec("acme", v, time.Hour)))
	}
	c.put(c.topic, c.msg(0, rec("filler", 1, time.Hour))) // kfake never compacts the newest batch
	c.s.Compact()
	start := time.Now()
	r := c.mustRun("dump")
	lines := jsonLines[dumpLine](t, r.stdout)
	var got []string
	for _, l := range lines {
		got = append(got, fmt.Sprintf("%d:%s=%d", l.Offset, *l.Key, l.Value.Limit))
	}
	if want := []string{"0:globex=11", "5:acme=5", "6:filler=1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q: what compaction left, with its gaps", got, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("dump took %s, want it to finish at once", d)
	}
}

func TestWatch(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	old := rec("before", 3, time.Hour)
	c.publish(c.topic, old)

	for _, tt := range []struct {
		name string
		args []string
	}{{"text", nil}, {"json from start", []string{"--output", "json", "--from-start"}}} {
		t.Run(tt.name, func(t *testing.T) {
			jsonOut := tt.args != nil
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var out, errb syncBuffer
			done := make(chan int, 1)
			go func() {
				done <- run(ctx, append(append([]string{"watch"}, c.flags("")...), tt.args...), nil, &out, &errb)
			}()
			eventually(t, "watch caught up", func() bool { return strings.Contains(errb.String(), "watching") })
			customer := "acme-" + strings.ReplaceAll(tt.name, " ", "-")
			c.mustRun("set", customer, "--limit", "20/min", "--for", "10m", "--reason", "watch me")
			c.mustRun("lift", customer)
			eventually(t, "lift printed", func() bool {
				for _, line := range strings.Split(out.String(), "\n") {
					if strings.Contains(line, "lifted") && strings.Contains(line, customer) {
						return true
					}
				}
				return false
			})
			cancel()
			select {
			case code := <-done:
				if code != exitOK {
					t.Fatalf("got exit %d after Ctrl-C, want 0; stderr %s", code, errb.String())
				}
			case <-time.After(10 * time.Second):
				t.Fatal("watch did not return after cancel")
			}
			if !jsonOut {
				lines := strings.Split(strings.TrimSpace(out.String()), "\n")
				if strings.Contains(out.String(), "before") {
					t.Fatalf("got the rebuild's records without --from-start:\n%s", out.String())
				}
				if len(lines) != 2 || !strings.Contains(lines[0], "set") || !strings.Contains(lines[0], customer+"  20/min enforce until") ||
					!strings.Contains(lines[0], "age ") || !strings.Contains(lines[1], "lifted") || !strings.Contains(lines[1], "was until") {
					t.Fatalf("got\n%s\nwant a set line and a lifted line of %s", out.String(), customer)
				}
				return
			}
			got := jsonLines[changeJSON](t, out.String())
			var kinds []string
			var mine []changeJSON // the first subtest's changes are in the rebuild too
			for _, l := range got {
				if l.Customer == "before" || l.Customer == customer {
					kinds = append(kinds, l.Change+" "+l.Customer)
					mine = append(mine, l)
				}
			}
			got = mine
			want := []string{"set before", "set " + customer, "lifted " + customer}
			if !reflect.DeepEqual(kinds, want) {
				t.Fatalf("got changes %q, want %q", kinds, want)
			}
			if !got[0].Rebuilding || got[1].Rebuilding || got[1].Limit != "20/min" || got[1].ExpiresAt == nil || got[1].AgeMS == nil || *got[1].AgeMS < 0 || *got[1].AgeMS > 10000 {
				t.Fatalf("got %+v, want the first from the rebuild, the second live with limit, expiry and a small age", got[:2])
			}
		})
	}
}

func TestListWarnsOfPoison(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	c.put(c.topic, c.msg(0, rec("acme", 1, time.Hour)), kafka.Message{Key: []byte("bad"), Value: []byte("junk!")}, kafka.Message{Key: []byte("short"), Value: []byte{0}})
	r := c.mustRun("list", "--output", "json")
	if want := "warning: skipped 2 poison records of topic " + c.topic + " (bad_magic=1 truncated=1)"; !strings.Contains(r.stderr, want) {
		t.Fatalf("got stderr %q, want %q", r.stderr, want)
	}
	if got := jsonLines[[]throttlejson.Record](t, r.stdout); len(got[0]) != 1 || got[0][0].Customer != "acme" {
		t.Fatalf("got %+v, want acme alone", got)
	}
}

// TestWatchBrokerOutage: a watch outlives the broker, says so, and still ends cleanly.
func TestWatchBrokerOutage(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, append([]string{"watch"}, c.flags("")...), nil, &out, &errb) }()
	eventually(t, "watch caught up", func() bool { return strings.Contains(errb.String(), "watching") })
	c.s.StopBroker()
	want := "brokers " + strings.Join(c.s.Brokers(), ",") + " unreachable; changes will show once they are back"
	eventually(t, "outage noticed", func() bool { return strings.Contains(errb.String(), want) })
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("got exit %d after Ctrl-C, want 0", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not return after cancel with the broker down")
	}
}

// liftJSON is lift --output json.
type liftJSON struct {
	Customer string               `json:"customer"`
	Topic    string               `json:"topic"`
	Lifted   bool                 `json:"lifted"`
	Throttle *throttlejson.Record `json:"throttle"`
}

// TestLift: lift publishes a tombstone for a customer with an active throttle and says
// it lifted it; for a customer without one (never throttled, expired, already lifted) it
// says there was nothing to lift, exits 0 (the customer is unthrottled, as asked) and
// writes nothing.
func TestLift(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	acme, globex := rec("acme", 20, time.Hour), rec("globex", 5, time.Hour)
	c.publish(c.topic, acme, globex, aged(rec("expired", 1, time.Minute), time.Hour))

	r := c.mustRun("lift", "acme", "--output", "json")
	got := jsonLines[liftJSON](t, r.stdout)
	if len(got) != 1 || !got[0].Lifted || got[0].Customer != "acme" || got[0].Topic != c.topic || got[0].Throttle == nil || got[0].Throttle.ID != acme.ID {
		t.Fatalf("lift acme --output json: got %q, want lifted true with acme's throttle %s", r.stdout, acme.ID)
	}
	r = c.mustRun("lift", "globex")
	if r.stdout != "lifted throttle of globex\n" {
		t.Fatalf("lift globex: got %q, want %q", r.stdout, "lifted throttle of globex\n")
	}
	if a := c.active(c.topic); len(a) != 0 {
		t.Fatalf("after lifting acme and globex: got %d active throttles, want none", len(a))
	}
	before := jsonLines[dumpLine](t, c.mustRun("dump").stdout)

	for _, customer := range []string{"nobody", "expired", "acme", "ACME"} {
		r := c.run("lift", customer)
		if want := "no throttle for " + customer + ": nothing to lift\n"; r.code != exitOK || r.stdout != want {
			t.Errorf("lift %s: got exit %d stdout %q stderr %q, want exit 0 and %q", customer, r.code, r.stdout, r.stderr, want)
		}
		r = c.run("lift", customer, "--output", "json")
		got := jsonLines[liftJSON](t, r.stdout)
		if r.code != exitOK || len(got) != 1 || got[0].Lifted || got[0].Throttle != nil || got[0].Customer != customer {
			t.Errorf("lift %s --output json: got exit %d stdout %q, want exit 0 and lifted false", customer, r.code, r.stdout)
		}
	}
	if after := jsonLines[dumpLine](t, c.mustRun("dump").stdout); len(after) != len(before) {
		t.Fatalf("lift of customers without a throttle wrote %d records, want none", len(after)-len(before))
	}

	// --force writes the tombstone without reading the topic.
	r = c.mustRun("lift", "nobody", "--force", "--output", "json")
	if got := jsonLines[liftJSON](t, r.stdout); len(got) != 1 || !got[0].Lifted || got[0].Throttle != nil {
		t.Fatalf("lift --force: got %q, want lifted true and no throttle", r.stdout)
	}
	after := jsonLines[dumpLine](t, c.mustRun("dump").stdout)
	if len(after) != len(before)+1 || !slices.ContainsFunc(after, func(l dumpLine) bool { return l.Tombstone && l.Key != nil && *l.Key == "nobody" }) {
		t.Fatalf("lift --force: got %d records after %d, want one more, a tombstone of nobody", len(after), len(before))
	}
}

// TestLiftRegistryDown: lift reads the topic first, which needs the registry; without it
// lift fails and points to --force, which lifts without reading.
func TestLiftRegistryDown(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	c.publish(c.topic, rec("acme", 1, time.Hour))
	c.s.StopRegistry()
	args := append(append([]string{"lift"}, c.flags("")...), "acme", "--timeout", "2s")
	r := invoke(t, t.Context(), "", args...)
	if r.code != exitError || !strings.Contains(r.stderr, "schema registry "+c.s.RegistryURL()) || !strings.Contains(r.stderr, "lift --force") {
		t.Fatalf("lift with the registry down: got exit %d stderr %q, want exit 1 naming the registry and --force", r.code, r.stderr)
	}
	r = invoke(t, t.Context(), "", append(args, "--force")...)
	if r.code != exitOK || r.stdout != "lifted throttle of acme\n" {
		t.Fatalf("lift --force with the registry down: got exit %d stdout %q stderr %q, want acme lifted", r.code, r.stdout, r.stderr)
	}
}
