package throttle_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
)

// matches reports whether tb holds exactly the keys' latest values in want (an
// independent read: nil is a tombstone).
func matches(tb *throttle.Table, codec *throttle.Codec, want map[string][]byte) bool {
	for key, v := range want {
		got, ok := tb.Get(key)
		if v == nil {
			if ok {
				return false
			}
			continue
		}
		r, err := codec.Decode(v)
		if err != nil || !ok || got.ID != r.ID {
			return false
		}
	}
	return true
}

// truth reads every partition of topic from its start with franz-go (read committed), an
// independent client, and returns each key's latest value (nil: a tombstone). It stops
// once no record has come for two seconds: the log is not being written meanwhile.
func truth(t *testing.T, brokers []string, topic string) map[string][]byte {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	got := map[string][]byte{}
	for quiet := 0; quiet < 4; {
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		n := 0
		fs.EachRecord(func(r *kgo.Record) {
			got[string(r.Key)] = r.Value
			n++
		})
		if n == 0 {
			quiet++
		} else {
			quiet = 0
		}
	}
	return got
}

// compactedTopic creates topic on the real cluster (replication 3, min.insync.replicas 2)
// with configs that let the log cleaner run within seconds of a write, plus cfg.
func compactedTopic(t *testing.T, topic string, partitions int, cfg map[string]string) *fixture {
	t.Helper()
	s := throttletest.Start(t, throttletest.Options{})
	all := map[string]string{"cleanup.policy": "compact", "segment.ms": "300", "min.cleanable.dirty.ratio": "0.01",
		"delete.retention.ms": "1000", "min.insync.replicas": "2"}
	for k, v := range cfg {
		all[k] = v
	}
	var entries []kafka.ConfigEntry
	for k, v := range all {
		entries = append(entries, kafka.ConfigEntry{ConfigName: k, ConfigValue: v})
	}
	cl := &kafka.Client{Addr: kafka.TCP(s.Brokers()...)}
	resp, err := cl.CreateTopics(t.Context(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: partitions, ReplicationFactor: 3, ConfigEntries: entries}}})
	if err != nil || resp.Errors[topic] != nil {
		t.Fatalf("create topic: %v %v", err, resp.Errors)
	}
	if err := cluster.WaitForTopics(t.Context(), s.Kafka(), topic); err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, s: s, topic: topic, codec: s.Codec(t, topic), parts: partitions}
}

// TestRealCompaction (issue 17 (a)): the Publisher and an idempotent franz-go producer
// (whose last batch per producer the cleaner keeps even when empty) write sets, lifts and
// expiry tombstones in multi-record batches; once the real log cleaner has run (the log
// has gaps), a table rebuilt from zero and one that followed live equal what an
// independent client reads.
func TestRealCompaction(t *testing.T) {
	throttletest.RequireReal(t, "needs Apache Kafka's log cleaner")
	f := compactedTopic(t, "real-compaction", 3, map[string]string{"min.compaction.lag.ms": "0"})
	s, topic, codec := f.s, f.topic, f.codec
	live := f.run()
	pub, err := throttle.NewPublisher(s.Kafka(), topic, codec)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	idem, err := kgo.NewClient(kgo.SeedBrokers(s.Brokers()...), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer idem.Close()

	ctx := t.Context()
	for round := range 6 {
		var recs []*kgo.Record
		for i := range 40 {
			c := "idem-" + strconv.Itoa(i)
			r := rec(c, int64(round*100+i), time.Hour)
			v, err := codec.Encode(&r)
			if err != nil {
				t.Fatal(err)
			}
			if i%7 == round%7 {
				v = nil // a lift
			}
			recs = append(recs, &kgo.Record{Key: []byte(c), Value: v})
		}
		if err := idem.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		for i := range 20 {
			c := "pub-" + strconv.Itoa(i)
			r := rec(c, int64(round*100+i), time.Hour)
			switch {
			case i%5 == round%5:
				err = pub.Lift(ctx, c)
			case i%6 == round%6:
				err = pub.Expire(ctx, r) // names a throttle never set: kept out by no one
			default:
				err = pub.Set(ctx, r)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(400 * time.Millisecond) // segment.ms: the next write rolls the segment
	}
	// Let the cleaner run over the rolled segments, then check it did: gaps in the log.
	gaps := 0
	deadline := time.Now().Add(60 * time.Second)
	for gaps == 0 && time.Now().Before(deadline) {
		if err := pub.Set(ctx, rec("roller", 1, time.Hour)); err != nil { // rolls segments
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		gaps = 0
		for p := range 3 {
			offs := rawOffsets(t, f, p)
			for i := 1; i < len(offs); i++ {
				if offs[i] != offs[i-1]+1 {
					gaps++
				}
			}
		}
	}
	if gaps == 0 {
		t.Fatal("the cleaner left no gap in 60s")
	}
	want := truth(t, s.Brokers(), topic)
	rebuilt := f.run()
	end := map[int]int64{}
	for _, p := range rebuilt.Stats().Partitions {
		end[p.Partition] = p.End
	}
	eventually(t, "live table at the end", func() bool {
		for _, p := range live.Stats().Partitions {
			if p.Position < end[p.Partition] {
				return false
			}
		}
		return true
	})
	held := 0
	for key, v := range want {
		for name, tb := range map[string]*throttle.Table{"live": live, "rebuilt": rebuilt} {
			got, ok := tb.Get(key)
			if v == nil {
				if ok {
					t.Errorf("%s: %s: got %+v, want absent (lifted)", name, key, got)
				}
				continue
			}
			r, err := codec.Decode(v)
			if err != nil {
				t.Fatal(err)
			}
			if !ok || got.ID != r.ID {
				t.Errorf("%s: %s: got %q (found %v), want %q", name, key, got.ID, ok, r.ID)
			}
		}
		if v != nil {
			held++
		}
	}
	t.Logf("real compaction on Kafka: %d gaps left by the cleaner, %d keys, %d held; live and rebuilt tables equal the independent read", gaps, len(want), held)
}

// TestRealLeaderFailover (issue 17 (b)): 1,000 throttles are published while the leader of
// a throttle partition is killed with SIGKILL (replication 3, min.insync.replicas 2).
// Every acknowledged Set reaches every one of three tables; the test reports the longest
// time from an acknowledgement to the last table applying it.
func TestRealLeaderFailover(t *testing.T) {
	throttletest.RequireReal(t, "kills a real broker")
	f := newFixture(t, 3, throttletest.Options{})
	s, topic, codec, nodes := f.s, f.topic, f.codec, f.s.Nodes(t)

	var mu sync.Mutex
	seen := map[string]time.Time{} // throttle id → when the last of the three tables applied it
	count := map[string]int{}
	var tables []*throttle.Table
	for range 3 {
		tables = append(tables, f.run(throttle.WithObserver(func(c throttle.Change) {
			if c.Kind != throttle.ChangeSet {
				return
			}
			mu.Lock()
			count[c.Record.ID]++
			if count[c.Record.ID] == 3 {
				seen[c.Record.ID] = time.Now()
			}
			mu.Unlock()
		})))
	}
	pub, err := throttle.NewPublisher(s.Kafka(), topic, codec)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	acked := map[string]time.Time{}
	var failed int
	var killed int
	for i := range 1000 {
		if i == 200 {
			id, err := nodes.Leader(t.Context(), topic, 0)
			if err != nil {
				t.Fatal(err)
			}
			nodes.Kill(id)
			killed = id
			t.Logf("killed node %d, leader of partition 0, after %d sets", id, i)
		}
		if i == 700 {
			if err := nodes.Start(t.Context(), killed); err != nil {
				t.Fatal(err)
			}
		}
		r := rec("failover-"+strconv.Itoa(i), int64(i), time.Hour)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		err := pub.Set(ctx, r)
		cancel()
		if err != nil {
			failed++
			continue
		}
		acked[r.ID] = time.Now()
	}
	deadline := time.Now().Add(60 * time.Second)
	var missing []string
	for {
		missing = missing[:0]
		mu.Lock()
		for id := range acked {
			if _, ok := seen[id]; !ok {
				missing = append(missing, id)
			}
		}
		mu.Unlock()
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(missing) > 0 {
		t.Fatalf("%d acknowledged throttles not in every table after 60s, e.g. %v", len(missing), missing[:min(5, len(missing))])
	}
	var worst time.Duration
	mu.Lock()
	for id, at := range acked {
		worst = max(worst, seen[id].Sub(at))
	}
	mu.Unlock()
	for i, tb := range tables {
		if tb.Stats().Active != len(acked) {
			t.Errorf("table %d: got %d active, want %d", i, tb.Stats().Active, len(acked))
		}
	}
	t.Logf("leader failover: %d of 1000 sets acknowledged (%d refused during the failover), all in 3 of 3 tables; longest ack-to-all-tables %v",
		len(acked), failed, worst.Round(time.Millisecond))
}

// TestRealDurabilityRefuses (issue 17 (f)): with two of three nodes down and
// min.insync.replicas 2, a Set and a Lift are refused with an error, never acknowledged;
// once a node returns, both succeed and the tables hold the result.
func TestRealDurabilityRefuses(t *testing.T) {
	throttletest.RequireReal(t, "stops real brokers")
	f := newFixture(t, 1, throttletest.Options{})
	s, topic, codec, nodes := f.s, f.topic, f.codec, f.s.Nodes(t)
	pub, err := throttle.NewPublisher(s.Kafka(), topic, codec)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Set(t.Context(), rec("acme", 1, time.Hour)); err != nil {
		t.Fatal(err)
	}
	leader, err := nodes.Leader(t.Context(), topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	var down []int
	for _, id := range nodes.NodeIDs() {
		if id != leader && len(down) < 2 {
			nodes.Kill(id)
			down = append(down, id)
		}
	}
	if len(down) < 2 { // the leader itself if need be: two of three must go
		nodes.Kill(leader)
		down = append(down, leader)
	}
	for what, op := range map[string]func(context.Context) error{
		"set":  func(ctx context.Context) error { return pub.Set(ctx, rec("globex", 2, time.Hour)) },
		"lift": func(ctx context.Context) error { return pub.Lift(ctx, "acme") },
	} {
		// Long enough for the writer's attempts to end with the broker's own answer.
		ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
		err := op(ctx)
		cancel()
		if err == nil {
			t.Fatalf("%s with 2 of 3 nodes down: acknowledged, want refused", what)
		}
		t.Logf("%s with nodes %v down: refused: %v", what, down, err)
	}
	if err := nodes.StartNodes(t.Context(), down...); err != nil {
		t.Fatal(err)
	}
	if err := nodes.WaitLeaders(t.Context(), topic, 2); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := pub.Set(ctx, rec("globex", 2, time.Hour)); err != nil {
		t.Fatalf("set after the nodes returned: %v", err)
	}
	if err := pub.Lift(ctx, "acme"); err != nil {
		t.Fatalf("lift after the nodes returned: %v", err)
	}
	tb := f.run()
	wantLimit(t, tb, "globex", 2)
	wantLimit(t, tb, "acme", -1)
}

// TestRealRollingRestart (issue 17 (c)): all three nodes are restarted one by one while
// throttles are set and lifted; afterwards three tables that followed live, and one
// rebuilt from zero, hold exactly what an independent client reads.
func TestRealRollingRestart(t *testing.T) {
	throttletest.RequireReal(t, "restarts real brokers")
	f := newFixture(t, 3, throttletest.Options{})
	s, topic, codec, nodes := f.s, f.topic, f.codec, f.s.Nodes(t)
	var tables []*throttle.Table
	for range 3 {
		tables = append(tables, f.run())
	}
	pub, err := throttle.NewPublisher(s.Kafka(), topic, codec)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	ctx, stop := context.WithCancel(t.Context())
	churned := make(chan [2]int)
	go func() { // churn: sets and lifts over 50 customers until stopped
		var ok, refused int
		for i := 0; ctx.Err() == nil; i++ {
			c := "roll-" + strconv.Itoa(i%50)
			wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			var err error
			if i%4 == 3 {
				err = pub.Lift(wctx, c)
			} else {
				err = pub.Set(wctx, rec(c, int64(i), time.Hour))
			}
			cancel()
			if err != nil {
				refused++
			} else {
				ok++
			}
		}
		churned <- [2]int{ok, refused}
	}()
	for _, id := range nodes.NodeIDs() {
		if err := nodes.Stop(t.Context(), id); err != nil {
			t.Fatal(err)
		}
		if err := nodes.Start(t.Context(), id); err != nil {
			t.Fatal(err)
		}
		if err := nodes.WaitLeaders(t.Context(), topic, 3); err != nil {
			t.Fatal(err)
		}
		t.Logf("node %d restarted", id)
	}
	stop()
	counts := <-churned
	want := truth(t, s.Brokers(), topic)
	tables = append(tables, f.run())
	equal := func(tb *throttle.Table) bool { return matches(tb, codec, want) }
	divergent := 0
	deadline := time.Now().Add(30 * time.Second)
	for i, tb := range tables {
		for !equal(tb) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if !equal(tb) {
			divergent++
			t.Errorf("table %d differs from the independent read after 30s", i)
		}
	}
	t.Logf("rolling restart of 3 nodes: %d writes acknowledged, %d refused, %d keys; %d divergent of %d tables (3 live, 1 rebuilt)",
		counts[0], counts[1], len(want), divergent, len(tables))
}

// TestRealSweeperUnderCompactionLag (issue 17 (e)): the sweeper's race (an expiry
// tombstone that lands after a renewal) on a topic whose min.compaction.lag.ms the real
// cleaner honours. With the sweeper, the renewal is written again within the lag, and
// after the cleaner has run a rebuilt table still holds it. A control topic gets the same
// log without a sweeper: there the cleaner leaves only the tombstone, and a rebuilt table
// loses the renewal (the hazard the repair exists for is real on this broker).
func TestRealSweeperUnderCompactionLag(t *testing.T) {
	throttletest.RequireReal(t, "needs Apache Kafka's log cleaner and its min.compaction.lag.ms")
	const lag = 4 * time.Second
	cfg := map[string]string{"min.compaction.lag.ms": strconv.Itoa(int(lag.Milliseconds()))}
	f := compactedTopic(t, "real-sweeper-lag", 1, cfg)
	control := compactedTopic(t, "real-sweeper-lag-control", 1, cfg)
	p, cp := f.publisher(), control.publisher()

	t1 := rec("acme", 20, 300*time.Millisecond)
	t2 := rec("acme", 40, time.Hour)
	t2.ID = "t2-renewal"
	tb, renewedAt := f.renewingSweeper(p, t1, t2)
	controlLive := control.run()
	if err := p.Set(t.Context(), t1); err != nil {
		t.Fatal(err)
	}
	eventually(t, "T2 re-published after the stale tombstone", func() bool {
		l := logOf(t, f, "acme")
		return len(l) == 4 && l[2].Value == nil && l[3].Value != nil
	})
	renewal := logOf(t, f, "acme")[1].Offset
	// The control topic: T1, T2, the stale tombstone, and no sweeper to repair it.
	for _, op := range []func() error{
		func() error { return cp.Set(t.Context(), t1) },
		func() error { return cp.Set(t.Context(), t2) },
		func() error { return cp.Expire(t.Context(), t1) },
	} {
		if err := op(); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "control: live table keeps T2 (compare-before-delete)", func() bool {
		c, ok := controlLive.Lookup("acme")
		return ok && c.ID() == t2.ID
	})

	// Roll segments on both topics until the cleaner has compacted acme on each; note when
	// the renewal's first copy left the log.
	var renewalGone time.Time
	deadline := time.Now().Add(90 * time.Second)
	for {
		for _, pub := range []*throttle.Publisher{p, cp} {
			if err := pub.Set(t.Context(), rec("roller-"+strconv.FormatInt(time.Now().UnixNano(), 36), 1, time.Hour)); err != nil {
				t.Fatal(err)
			}
		}
		l, cl := logOf(t, f, "acme"), logOf(t, control, "acme")
		if renewalGone.IsZero() && (len(l) == 0 || l[0].Offset > renewal) {
			renewalGone = time.Now()
		}
		if len(l) == 1 && len(cl) <= 1 {
			if l[0].Value == nil {
				t.Fatal("the cleaner left a tombstone as acme's last record: the renewal is lost")
			}
			if len(cl) == 1 && cl[0].Value != nil {
				t.Fatal("control: the cleaner kept a throttle after the stale tombstone")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cleaner did not compact acme in 90s: %d records (control %d)", len(l), len(cl))
		}
		time.Sleep(500 * time.Millisecond)
	}
	// Kafka keeps a record at least min.compaction.lag.ms: the window the repair relies on.
	if kept := renewalGone.Sub(renewedAt()); kept < lag {
		t.Fatalf("the renewal's first copy was compacted %v after it was written, inside the %v lag", kept, lag)
	}
	if got, ok := f.run().Lookup("acme"); !ok || got.ID() != t2.ID {
		t.Fatalf("rebuilt after compaction: got %+v (found %v), want T2", got, ok)
	}
	wantLimit(t, tb, "acme", 40)
	if got, ok := control.run().Lookup("acme"); ok {
		t.Fatalf("control rebuilt after compaction: got %+v, want no throttle (the hazard did not occur)", got)
	}
	t.Logf("sweeper under min.compaction.lag.ms=%v: the renewal's first copy was compacted %v after it was written; "+
		"with the repair a rebuilt table holds T2, without it (control topic) the rebuilt table lost it while the live one kept it",
		lag, renewalGone.Sub(renewedAt()).Round(100*time.Millisecond))
}
