package main

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

// dumpTo dumps the cluster's topic to a file and returns its path.
func (c *testCluster) dumpTo(topic string) string {
	c.t.Helper()
	r := c.runIn(topic, "", "dump")
	if r.code != exitOK {
		c.t.Fatalf("dump: got exit %d, want 0; stderr %s", r.code, r.stderr)
	}
	path := c.t.TempDir() + "/dump.jsonl"
	writeFile(c.t, path, r.stdout)
	return path
}

func (c *testCluster) restore(topic, file string, args ...string) restoreResult {
	c.t.Helper()
	r := c.runIn(topic, "", "restore", append([]string{file, "--output", "json"}, args...)...)
	if r.code != exitOK {
		c.t.Fatalf("restore: got exit %d, want 0; stderr %s", r.code, r.stderr)
	}
	res := jsonLines[restoreResult](c.t, r.stdout)
	if len(res) != 1 {
		c.t.Fatalf("restore: got %q, want one JSON summary", r.stdout)
	}
	return res[0]
}

func wantCounts(t *testing.T, res restoreResult, want map[string]int) {
	t.Helper()
	for k, n := range want {
		if res.Counts[k] != n {
			t.Errorf("restore %s: got %d, want %d (all %v, actions %+v)", k, res.Counts[k], n, res.Counts, res.Actions)
		}
	}
}

func TestDumpRestoreRoundTrip(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	auto := rec("globex", 5, time.Hour)
	auto.Reason = throttle.Reason{Kind: throttle.ReasonAutomatic, Metric: "lag_seconds", Value: 42.5, Note: "lagging"}
	auto.Mode = throttle.ModeShadow
	first, renewal := rec("initech", 1, time.Hour), rec("initech", 2, 2*time.Hour)
	t1, t2 := rec("hooli", 10, time.Hour), rec("hooli", 20, time.Hour)
	c.publish(c.topic,
		rec("acme", 20, time.Hour), auto, first, renewal,
		rec("lifted", 1, time.Hour), aged(rec("expired", 1, time.Minute), time.Hour),
		t1, t2, rec("umbrella", 0, 30*time.Minute),
	)
	p, err := throttle.NewPublisher(c.s.Kafka(), c.topic, c.codec)
	if err != nil {
		t.Fatal(err)
	}
	// A stale expiry tombstone: it names t1, but t2 is current, so readers keep t2.
	if err := p.Expire(t.Context(), t1); err != nil {
		t.Fatal(err)
	}
	if err := p.Lift(t.Context(), "lifted"); err != nil {
		t.Fatal(err)
	}
	p.Close()
	c.put(c.topic, kafka.Message{Partition: 1, Key: []byte("poison"), Value: []byte("junk")})
	// No customer: poison (no_key). An empty key, as a real broker refuses a null one on a
	// compacted topic.
	c.put(c.topic, kafka.Message{Partition: 2, Key: []byte{}, Value: []byte("no key")})
	source := c.active(c.topic)
	if len(source) != 5 {
		t.Fatalf("source table: got %d active, want 5", len(source))
	}

	file := c.dumpTo(c.topic)
	target := topicName(t, "-restored")
	if r := c.runIn(target, "", "ensure-topic", "--partitions", "6"); r.code != exitOK {
		t.Fatalf("ensure-topic: got exit %d, want 0; stderr %s", r.code, r.stderr)
	}
	res := c.restore(target, file)
	wantCounts(t, res, map[string]int{actRestored: 5, actExpired: 1, actLifted: 1, actNewer: 0, actSame: 0})
	if res.Poison != 2 {
		t.Errorf("got %d poison, want 2", res.Poison)
	}
	if got := c.active(target); !reflect.DeepEqual(got, source) {
		t.Fatalf("restored table: got\n%+v\nwant the source's\n%+v", got, source)
	}

	// Again: everything is there already.
	res = c.restore(target, file)
	wantCounts(t, res, map[string]int{actRestored: 0, actSame: 5})
}

func TestRestoreKeepsNewer(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	target := topicName(t, "-target")
	c.s.CreateTopic(t, target, 3)
	tick := func() { time.Sleep(5 * time.Millisecond) } // timestamps are in milliseconds

	// Before the dump's records were written, the target had: an older throttle of
	// "older" and a tombstone of "relifted".
	olderOnTarget := aged(rec("older", 1, time.Hour), time.Minute)
	c.publish(target, olderOnTarget)
	c.put(target, tomb(0, "relifted"))
	tick()

	updated, lifted, older, absent, relifted, same := rec("updated", 1, time.Hour), rec("lifted", 2, time.Hour),
		rec("older", 3, time.Hour), rec("absent", 4, time.Hour), rec("relifted", 5, time.Hour), rec("same", 6, time.Hour)
	c.publish(c.topic, updated, lifted, older, absent, relifted, same)
	c.publish(target, same)
	file := c.dumpTo(c.topic)
	tick()

	// After the dump, on the target: "updated" gets a newer throttle, "lifted" is lifted.
	newer := rec("updated", 100, time.Hour)
	c.publish(target, newer)
	c.put(target, tomb(0, "lifted"))

	res := c.restore(target, file)
	want := map[string]string{"updated": actNewer, "lifted": actNewer, "older": actRestored, "absent": actRestored, "relifted": actRestored, "same": actSame}
	got := map[string]string{}
	for _, a := range res.Actions {
		got[a.Customer] = a.Action
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got actions %v, want %v", got, want)
	}
	active := map[string]throttle.Record{}
	for _, r := range c.active(target) {
		active[r.Customer] = r
	}
	wantIDs := map[string]string{"updated": newer.ID, "older": older.ID, "absent": absent.ID, "relifted": relifted.ID, "same": same.ID}
	if len(active) != len(wantIDs) {
		t.Fatalf("got %d active on the target, want %d: %+v", len(active), len(wantIDs), active)
	}
	for customer, id := range wantIDs {
		if active[customer].ID != id {
			t.Errorf("%s: got throttle %q on the target, want %q", customer, active[customer].ID, id)
		}
	}
	if _, ok := active["lifted"]; ok {
		t.Error("lifted: got a throttle on the target, want it to stay lifted")
	}
}

// TestRestoreExactIsFailback: the target is a region that was lost and comes back stale;
// the dump is the region that took over. --exact leaves the target with exactly the
// dump's throttles: what the dump lifted or let expire is lifted on the target (not
// resurrected), what the target alone holds (written there and never copied) is lifted,
// a dump throttle wins over a newer one, and a second run changes nothing.
func TestRestoreExactIsFailback(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	stale := topicName(t, "-stale")
	c.s.CreateTopic(t, stale, 3)
	tick := func() { time.Sleep(5 * time.Millisecond) }

	// Both regions had these before the loss.
	kept, liftedLater, renewedLater, expiringLater := rec("kept", 1, time.Hour), rec("lifted-later", 2, time.Hour), rec("renewed-later", 3, time.Hour), rec("expiring", 4, time.Hour)
	c.publish(c.topic, kept, liftedLater, renewedLater, expiringLater)
	c.publish(stale, kept, liftedLater, renewedLater, expiringLater)
	// The lost region acknowledged one more that the mirror never copied.
	c.publish(stale, rec("never-copied", 5, time.Hour))
	tick()
	// After the failover, the region that took over lifts, renews, expires and sets.
	p, err := throttle.NewPublisher(c.s.Kafka(), c.topic, c.codec)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Lift(t.Context(), "lifted-later"); err != nil {
		t.Fatal(err)
	}
	if err := p.Expire(t.Context(), expiringLater); err != nil {
		t.Fatal(err)
	}
	p.Close()
	renewed, fresh := rec("renewed-later", 30, time.Hour), rec("new-after-failover", 6, time.Hour)
	c.publish(c.topic, renewed, fresh)
	file := c.dumpTo(c.topic)
	// Without --exact, restore would leave both lifted throttles alive on the stale side.
	if res := c.restore(stale, file, "--dry-run"); res.Counts[actLifted] != 2 {
		t.Fatalf("plain restore: got %v, want 2 skipped-lifted", res.Counts)
	}

	res := c.restore(stale, file, "--exact")
	wantCounts(t, res, map[string]int{actRestored: 2, actSame: 1, actLift: 3, actLifted: 2})
	want := c.active(c.topic)
	if got := c.active(stale); !reflect.DeepEqual(got, want) {
		t.Fatalf("after restore --exact the stale topic holds\n%+v\nwant the dump's\n%+v", got, want)
	}
	res = c.restore(stale, file, "--exact")
	wantCounts(t, res, map[string]int{actRestored: 0, actSame: 3, actLift: 0})
}

func TestRestoreSkipsExpired(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	c.publish(c.topic, rec("short", 1, 500*time.Millisecond), rec("long", 2, time.Hour), aged(rec("gone", 3, time.Minute), time.Hour))
	file := c.dumpTo(c.topic)
	time.Sleep(600 * time.Millisecond) // "short" expires between the dump and the restore
	target := topicName(t, "-target")
	c.s.CreateTopic(t, target, 2)
	res := c.restore(target, file)
	wantCounts(t, res, map[string]int{actRestored: 1, actExpired: 2})
	got := c.active(target)
	if len(got) != 1 || got[0].Customer != "long" {
		t.Fatalf("got %+v on the target, want long alone", got)
	}
	if r := c.runIn(target, "", "dump"); strings.Contains(r.stdout, `"short"`) || strings.Contains(r.stdout, `"gone"`) {
		t.Fatalf("got expired throttles written to the target:\n%s", r.stdout)
	}
}

func TestRestoreStdinAndDryRun(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	c.publish(c.topic, rec("acme", 1, time.Hour))
	dump := c.mustRun("dump").stdout
	target := topicName(t, "-target")
	c.s.CreateTopic(t, target, 1)

	r := c.runIn(target, dump, "restore", "-", "--dry-run")
	if r.code != exitOK || !strings.Contains(r.stdout, "would restore 1, unchanged 0, skipped-newer 0, skipped-expired 0") {
		t.Fatalf("dry run: got exit %d stdout %q stderr %q, want it to say it would restore 1", r.code, r.stdout, r.stderr)
	}
	if got := c.active(target); len(got) != 0 {
		t.Fatalf("dry run: got %d throttles written, want none", len(got))
	}
	r = c.runIn(target, dump, "restore", "-")
	if r.code != exitOK || !strings.Contains(r.stdout, "restored\tacme") && !strings.Contains(r.stdout, "restored  acme") {
		t.Fatalf("restore from stdin: got exit %d stdout %q stderr %q, want acme restored", r.code, r.stdout, r.stderr)
	}
	if got := c.active(target); len(got) != 1 || got[0].Customer != "acme" {
		t.Fatalf("restore from stdin: got %+v on the target, want acme", got)
	}
}

func TestRestoreBadInputWritesNothing(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	c.publish(c.topic, rec("acme", 1, time.Hour))
	good := strings.TrimSpace(c.mustRun("dump").stdout)
	target := topicName(t, "-target")
	c.s.CreateTopic(t, target, 1)
	tests := []struct {
		name, content, want string
	}{
		{"not json", good + "\n{oops\n", "line 2: not a dump line"},
		{"two kinds", good + "\n" + strings.Replace(good, `"headers":[]`, `"headers":[],"tombstone":true`, 1) + "\n", "line 2: want exactly one of value, tombstone and poison"},
		{"nothing", `{"partition":0,"offset":1,"timestamp":"2024-01-01T00:00:00Z","key":"x","headers":[]}` + "\n", "line 1: want exactly one"},
		{"invalid value", strings.Replace(good, `"window_ms":60000`, `"window_ms":0`, 1) + "\n", "line 1: value: throttle: invalid record"},
		{"bad mode", strings.Replace(good, `"mode":"enforce"`, `"mode":"loud"`, 1) + "\n", `line 1: value: mode "loud"`},
		{"no timestamp", strings.Replace(good, `"timestamp"`, `"time"`, 1) + "\n", "line 1: timestamp missing"},
	}
	for _, tt := range tests {
		path := t.TempDir() + "/dump.jsonl"
		writeFile(t, path, tt.content)
		r := c.runIn(target, "", "restore", path)
		if r.code != exitError || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%s: got exit %d stderr %q, want exit %d and %q", tt.name, r.code, r.stderr, exitError, tt.want)
		}
	}
	if r := c.runIn(target, "", "restore", t.TempDir()+"/missing.jsonl"); r.code != exitError || !strings.Contains(r.stderr, "no such file") {
		t.Errorf("missing file: got exit %d stderr %q, want exit %d", r.code, r.stderr, exitError)
	}
	if got := c.runIn(target, "", "dump").stdout; got != "" {
		t.Fatalf("got records on the target after bad input:\n%s", got)
	}
}

// TestDecide pins down what "older" means for restore.
func TestDecide(t *testing.T) {
	t.Parallel()
	now := time.Now()
	at := now.Add(-time.Minute) // when the dump's record was written
	dumped := rec("acme", 1, time.Hour)
	state := func(r *throttle.Record, ts time.Time, lifted bool) *keyState {
		return &keyState{customer: "acme", rec: r, at: ts, lifted: lifted}
	}
	ptr := func(r throttle.Record) *throttle.Record { return &r }
	other := func(created time.Time) *throttle.Record {
		r := rec("acme", 2, time.Hour)
		r.CreatedAt = created
		return &r
	}
	tests := []struct {
		name         string
		dump, target *keyState
		want         string
	}{
		{"absent on target", state(&dumped, at, false), nil, actRestored},
		{"same id on target", state(&dumped, at, false), state(ptr(dumped), now, false), actSame},
		{"older throttle on target", state(&dumped, at, false), state(other(dumped.CreatedAt.Add(-time.Millisecond)), now, false), actRestored},
		{"throttle created at the same instant", state(&dumped, at, false), state(other(dumped.CreatedAt), now, false), actNewer},
		{"newer throttle on target", state(&dumped, at, false), state(other(dumped.CreatedAt.Add(time.Millisecond)), now, false), actNewer},
		{"older tombstone on target", state(&dumped, at, false), state(nil, at.Add(-time.Millisecond), true), actRestored},
		{"tombstone at the same instant", state(&dumped, at, false), state(nil, at, true), actNewer},
		{"newer tombstone on target", state(&dumped, at, false), state(nil, at.Add(time.Millisecond), true), actNewer},
		{"expired in the dump", state(ptr(aged(dumped, 2*time.Hour)), at, false), nil, actExpired},
		{"lifted in the dump", state(nil, at, true), nil, actLifted},
	}
	for _, tt := range tests {
		if got := decide(tt.dump, tt.target, now); got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.name, got, tt.want)
		}
	}
}

// TestStatesFollowTheTable: folding records gives what a throttle.Table holds.
func TestStatesFollowTheTable(t *testing.T) {
	t.Parallel()
	r1, r2 := rec("acme", 1, time.Hour), rec("acme", 2, time.Hour)
	ts := time.Now()
	e := func(r *throttle.Record, tombstone bool, headers ...kafka.Header) entry {
		return entry{Key: []byte("acme"), Time: ts, Record: r, Tombstone: tombstone, Headers: headers}
	}
	expires := func(id string) kafka.Header { return kafka.Header{Key: throttle.HeaderExpires, Value: []byte(id)} }
	tests := []struct {
		name    string
		entries []entry
		wantID  string // "" for none
		lifted  bool
	}{
		{"set", []entry{e(&r1, false)}, r1.ID, false},
		{"replace", []entry{e(&r1, false), e(&r2, false)}, r2.ID, false},
		{"lift", []entry{e(&r1, false), e(nil, true)}, "", true},
		{"expiry of the current one", []entry{e(&r1, false), e(nil, true, expires(r1.ID))}, "", true},
		{"stale expiry tombstone", []entry{e(&r1, false), e(&r2, false), e(nil, true, expires(r1.ID))}, r2.ID, false},
		{"poison changes nothing", []entry{e(&r1, false), {Key: []byte("acme"), Poison: "bad_magic"}}, r1.ID, false},
	}
	for _, tt := range tests {
		st := newStates()
		for _, en := range tt.entries {
			st.apply(en)
		}
		ks := st.byKey["acme"]
		gotID := ""
		if ks.rec != nil {
			gotID = ks.rec.ID
		}
		if gotID != tt.wantID || ks.lifted != tt.lifted {
			t.Errorf("%s: got throttle %q lifted %v, want %q lifted %v", tt.name, gotID, ks.lifted, tt.wantID, tt.lifted)
		}
	}
}
