package throttle_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/follow"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
)

// fixture is a stack, a topic and a codec, plus helpers to write records by hand.
type fixture struct {
	t     *testing.T
	s     *throttletest.Stack
	topic string
	codec *throttle.Codec
	parts int
}

func newFixture(t *testing.T, partitions int, opts throttletest.Options) *fixture {
	t.Helper()
	s := throttletest.Start(t, opts)
	topic := "throttles-" + sanitize(t.Name())
	s.CreateTopic(t, topic, partitions)
	return &fixture{t: t, s: s, topic: topic, codec: s.Codec(t, topic), parts: partitions}
}

func sanitize(name string) string {
	b := []byte(name)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '-'
		}
	}
	return string(b)
}

func rec(customer string, limit int64, ttl time.Duration) throttle.Record {
	now := time.Now().UTC().Truncate(time.Millisecond)
	return throttle.Record{
		ID: fmt.Sprintf("%s-%d-%d", customer, limit, now.UnixNano()), Customer: customer, Limit: limit,
		Window: time.Minute, CreatedAt: now, ExpiresAt: now.Add(ttl),
		Reason: throttle.Reason{Kind: throttle.ReasonManual, Note: "test"}, SetBy: "test",
	}
}

func (f *fixture) msg(partition int, r throttle.Record) kafka.Message {
	f.t.Helper()
	b, err := f.codec.Encode(&r)
	if err != nil {
		f.t.Fatal(err)
	}
	return kafka.Message{Partition: partition, Key: []byte(r.Customer), Value: b}
}

// home is msg on the partition the record's key belongs to.
func (f *fixture) home(r throttle.Record) kafka.Message { return f.msg(home(r.Customer, f.parts), r) }

// homeTomb is a tombstone on the partition the customer's key belongs to.
func (f *fixture) homeTomb(customer string) kafka.Message {
	return tomb(home(customer, f.parts), customer)
}

// customerOn returns the i-th customer id whose key belongs to partition p of n.
func customerOn(t *testing.T, p, n, i int) string {
	for j := range 100000 {
		c := fmt.Sprintf("c-%d", j)
		if home(c, n) == p {
			if i == 0 {
				return c
			}
			i--
		}
	}
	t.Fatal("no such customer id")
	return ""
}

func tomb(partition int, customer string) kafka.Message {
	return kafka.Message{Partition: partition, Key: []byte(customer)}
}

func (f *fixture) put(msgs ...kafka.Message) { f.t.Helper(); f.s.MustProduce(f.t, f.topic, msgs...) }

// run starts a table and returns it once ready.
func (f *fixture) run(opts ...throttle.Option) *throttle.Table {
	f.t.Helper()
	tb := f.start(opts...)
	ctx, cancel := context.WithTimeout(f.t.Context(), 20*time.Second)
	defer cancel()
	if err := tb.WaitReady(ctx); err != nil {
		f.t.Fatalf("table never ready: %v (stats %+v)", err, tb.Stats())
	}
	return tb
}

func (f *fixture) start(opts ...throttle.Option) *throttle.Table {
	f.t.Helper()
	opts = append([]throttle.Option{throttle.WithRead(follow.WithPollInterval(50 * time.Millisecond)), throttle.WithRead(follow.WithBackoff(20*time.Millisecond, 200*time.Millisecond))}, opts...)
	// A codec of its own, as a separate service would have: nothing cached from writing.
	tb, err := throttle.NewTable(f.s.Kafka(), f.topic, f.s.Codec(f.t, f.topic), opts...)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tb.Run(ctx) }()
	f.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				f.t.Errorf("Run returned %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			f.t.Error("Run did not return after cancel")
		}
	})
	return tb
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func wantLimit(t *testing.T, tb *throttle.Table, customer string, limit int64) {
	t.Helper()
	r, ok := tb.Lookup(customer)
	if limit < 0 {
		if ok {
			t.Fatalf("Lookup(%q): got %+v, want absent", customer, r)
		}
		return
	}
	if !ok || r.Limit != limit {
		t.Fatalf("Lookup(%q): got %d (found %v), want limit %d", customer, r.Limit, ok, limit)
	}
}

func TestTableZeroRecords(t *testing.T) {
	f := newFixture(t, 3, throttletest.Options{})
	tb := f.run()
	if got := tb.Active(); len(got) != 0 {
		t.Fatalf("got %d active, want 0", len(got))
	}
	wantLimit(t, tb, "acme", -1)
	for _, p := range tb.Stats().Partitions {
		if !p.CaughtUp || p.End != 0 {
			t.Fatalf("partition %+v: want caught up at end 0", p)
		}
	}
}

func TestTableEmptyPartitions(t *testing.T) {
	f := newFixture(t, 4, throttletest.Options{})
	// Only partition 2 has records; 0, 1 and 3 are empty and must count as caught up.
	a, b := customerOn(t, 2, 4, 0), customerOn(t, 2, 4, 1)
	f.put(f.msg(2, rec(a, 5, time.Hour)), f.msg(2, rec(b, 7, time.Hour)))
	tb := f.run()
	wantLimit(t, tb, a, 5)
	wantLimit(t, tb, b, 7)
}

func TestTableRebuildCompactedWithGaps(t *testing.T) {
	throttletest.RequireKfake(t, "compacts on demand (Cluster().Compact), which real Kafka cannot")
	f := newFixture(t, 2, throttletest.Options{})
	// Many versions per key, then tombstones, so compaction leaves gaps of offsets.
	for v := int64(1); v <= 5; v++ {
		f.put(f.home(rec("acme", v, time.Hour)), f.home(rec("globex", 10+v, time.Hour)), f.home(rec("initech", 20+v, time.Hour)))
	}
	f.put(f.home(rec("hooli", 1, time.Hour)), f.homeTomb("hooli"), f.home(rec("umbrella", 3, time.Hour)))
	// On partition 0: z survives, a's first version goes, b survives: a gap between z and b.
	z, a, b := customerOn(t, 0, 2, 0), customerOn(t, 0, 2, 1), customerOn(t, 0, 2, 2)
	f.put(f.msg(0, rec(z, 1, time.Hour)), f.msg(0, rec(a, 1, time.Hour)), f.msg(0, rec(b, 1, time.Hour)), f.msg(0, rec(a, 2, time.Hour)))
	f.put(f.home(rec("acme", 99, time.Hour))) // keeps the tail batch the newest acme
	before := f.s.Cluster()
	before.Compact()

	// The log now has gaps: read the partitions raw and check offsets jump.
	gap := false
	var all [][]int64
	for p := range 2 {
		offsets := rawOffsets(t, f, p)
		all = append(all, offsets)
		for i := 1; i < len(offsets); i++ {
			if offsets[i] != offsets[i-1]+1 {
				gap = true
			}
		}
	}
	if !gap {
		t.Fatalf("got contiguous offsets %v after compaction, want gaps", all)
	}

	tb := f.run()
	wantLimit(t, tb, "acme", 99)
	wantLimit(t, tb, "globex", 15)
	wantLimit(t, tb, "initech", 25)
	wantLimit(t, tb, "umbrella", 3)
	wantLimit(t, tb, "hooli", -1)
	wantLimit(t, tb, a, 2)
	if got := len(tb.Active()); got != 7 {
		t.Fatalf("got %d active, want 7", got)
	}
}

func rawOffsets(t *testing.T, f *fixture, partition int) []int64 {
	t.Helper()
	cl := &kafka.Client{Addr: kafka.TCP(f.s.Brokers()...)}
	lo, err := cl.ListOffsets(t.Context(), &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{f.topic: {kafka.FirstOffsetOf(partition)}}})
	if err != nil {
		t.Fatal(err)
	}
	first := lo.Topics[f.topic][0].FirstOffset
	resp, err := cl.Fetch(t.Context(), &kafka.FetchRequest{Topic: f.topic, Partition: partition, Offset: first, MaxBytes: 1 << 20})
	if err != nil || resp.Error != nil {
		t.Fatalf("fetch: %v %v", err, resp.Error)
	}
	var out []int64
	for {
		r, err := resp.Records.ReadRecord()
		if err != nil {
			return out
		}
		out = append(out, r.Offset)
	}
}

func TestTableTombstoneDeletes(t *testing.T) {
	f := newFixture(t, 1, throttletest.Options{})
	f.put(f.msg(0, rec("acme", 5, time.Hour)), f.msg(0, rec("globex", 6, time.Hour)))
	var mu sync.Mutex
	var changes []throttle.Change
	tb := f.run(throttle.WithObserver(func(c throttle.Change) { mu.Lock(); changes = append(changes, c); mu.Unlock() }))
	wantLimit(t, tb, "acme", 5)
	f.put(tomb(0, "acme"))
	eventually(t, "acme lifted", func() bool { _, ok := tb.Lookup("acme"); return !ok })
	wantLimit(t, tb, "globex", 6)
	mu.Lock()
	defer mu.Unlock()
	last := changes[len(changes)-1]
	if last.Kind != throttle.ChangeLifted || last.Customer != "acme" || last.Record.Limit != 5 || last.Rebuilding {
		t.Fatalf("got last change %+v, want a live lift of acme's limit-5 throttle", last)
	}
	if last.Age < 0 || last.Age > 10*time.Second {
		t.Fatalf("got propagation age %s, want a small positive duration", last.Age)
	}
}

func TestTableStaleExpiryTombstoneKeepsNewer(t *testing.T) {
	f := newFixture(t, 1, throttletest.Options{})
	t1 := rec("acme", 5, time.Hour)
	t2 := rec("acme", 9, time.Hour)
	t2.ID = "renewal"
	f.put(f.msg(0, t1), f.msg(0, t2), kafka.Message{Key: []byte("acme"), Headers: []kafka.Header{{Key: throttle.HeaderExpires, Value: []byte(t1.ID)}}})
	var stale []throttle.Change
	var mu sync.Mutex
	tb := f.run(throttle.WithObserver(func(c throttle.Change) {
		if c.Kind == throttle.ChangeStaleTombstone {
			mu.Lock()
			stale = append(stale, c)
			mu.Unlock()
		}
	}))
	wantLimit(t, tb, "acme", 9)
	mu.Lock()
	defer mu.Unlock()
	if len(stale) != 1 || stale[0].Record.ID != "renewal" {
		t.Fatalf("got stale-tombstone changes %+v, want one keeping the renewal", stale)
	}
	// A tombstone naming the current throttle, or none at all, deletes it.
	f.put(kafka.Message{Key: []byte("acme"), Headers: []kafka.Header{{Key: throttle.HeaderExpires, Value: []byte("renewal")}}})
	eventually(t, "acme expired by tombstone", func() bool { _, ok := tb.Lookup("acme"); return !ok })
}

// TestTableExpiryTombstoneOfAMissedThrottle: a table that never saw throttle B (compaction
// removed it before the table read that far) holds the older A when B's expiry tombstone
// arrives. The tombstone names B's creation time: A is older, so it goes, and the table
// agrees with one rebuilt from zero, which holds nothing. A renewal newer than the
// tombstone's throttle stays (the sweeper's hazard, above).
func TestTableExpiryTombstoneOfAMissedThrottle(t *testing.T) {
	f := newFixture(t, 1, throttletest.Options{})
	a := rec("acme", 5, time.Hour)
	b := rec("acme", 9, time.Hour)
	b.ID, b.CreatedAt = "missed", a.CreatedAt.Add(time.Second)
	tombOf := func(r throttle.Record) kafka.Message {
		return kafka.Message{Key: []byte(r.Customer), Headers: []kafka.Header{
			{Key: throttle.HeaderExpires, Value: []byte(r.ID)},
			{Key: throttle.HeaderExpiresCreated, Value: []byte(strconv.FormatInt(r.CreatedAt.UnixMilli(), 10))},
		}}
	}
	f.put(f.msg(0, a))
	tb := f.run()
	wantLimit(t, tb, "acme", 5)
	f.put(tombOf(b)) // as if b was written and compacted away before this table read it
	eventually(t, "the older throttle deleted", func() bool { _, ok := tb.Lookup("acme"); return !ok })

	renewal := rec("acme", 7, time.Hour)
	renewal.ID, renewal.CreatedAt = "renewal", b.CreatedAt.Add(time.Second)
	f.put(f.msg(0, renewal), tombOf(b)) // b's tombstone decided before the renewal landed
	time.Sleep(200 * time.Millisecond)
	wantLimit(t, tb, "acme", 7)
}

func TestTableNeverReadyBeforeEnd(t *testing.T) {
	f := newFixture(t, 2, throttletest.Options{})
	var msgs []kafka.Message
	for i := range 100 {
		msgs = append(msgs, f.home(rec(fmt.Sprintf("c%03d", i), int64(i), time.Hour)))
	}
	f.put(msgs...)
	gate := make(chan struct{})
	var seen sync.WaitGroup
	seen.Add(1)
	var once sync.Once
	tb := f.start(throttle.WithObserver(func(c throttle.Change) {
		if c.Customer == "c050" {
			once.Do(seen.Done)
			<-gate // hold the rebuild half-way
		}
	}))
	seen.Wait()
	time.Sleep(200 * time.Millisecond) // give a wrong implementation time to turn ready
	if tb.Ready() {
		t.Fatal("got ready half-way through the rebuild, want not ready")
	}
	wantLimit(t, tb, "c000", -1) // nothing served before ready
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := tb.WaitReady(ctx); err == nil {
		t.Fatal("WaitReady returned nil half-way, want a timeout")
	}
	close(gate)
	ctx2, cancel2 := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel2()
	if err := tb.WaitReady(ctx2); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		wantLimit(t, tb, fmt.Sprintf("c%03d", i), int64(i))
	}
}

func TestTablePoisonRecords(t *testing.T) {
	f := newFixture(t, 1, throttletest.Options{})
	good := f.msg(0, rec("acme", 5, time.Hour))
	bad := func(key string, v []byte) kafka.Message { return kafka.Message{Key: []byte(key), Value: v} }
	invalid := rec("x", 1, time.Hour)
	invalidMsg := f.msg(0, invalid)
	invalidMsg.Key = []byte("someone-else")    // decodes fine, but under another customer's key
	notRecord := []byte{0, 0, 0, 0, 0, 2, 'x'} // a registered schema, but no record: "x" as an Avro string
	binary.BigEndian.PutUint32(notRecord[1:5], uint32(registerSchema(t, f.s, "other-value", `"string"`)))
	f.put(
		good,
		bad("p1", append([]byte{7}, good.Value[1:]...)), // wrong magic byte
		f.msg(0, rec("between1", 1, time.Hour)),
		bad("p2", []byte{0, 0}), // truncated header
		bad("p3", notRecord),    // a schema that is no throttle's
		f.msg(0, rec("between2", 2, time.Hour)),
		bad("p4", append(append([]byte{}, good.Value[:5]...), 0xff, 0xff)), // body does not match
		bad("p5", []byte{}),                                                // empty value: not a tombstone on the wire, so poison (truncated)
		invalidMsg,
		f.msg(0, rec("globex", 7, time.Hour)),
	)
	tb := f.run()
	wantLimit(t, tb, "acme", 5)
	wantLimit(t, tb, "between1", 1)
	wantLimit(t, tb, "between2", 2)
	wantLimit(t, tb, "globex", 7)
	st := tb.Stats()
	for reason, want := range map[string]int64{"bad_magic": 1, "truncated": 2, "unknown_schema": 1, "bad_body": 1, "key_mismatch": 1} {
		if st.Poison[reason] != want {
			t.Errorf("poison %s: got %d, want %d (all %v)", reason, st.Poison[reason], want, st.Poison)
		}
	}
	// The table keeps following after poison.
	f.put(bad("p6", []byte("junk")), f.msg(0, rec("late", 3, time.Hour)))
	eventually(t, "record after poison", func() bool { _, ok := tb.Lookup("late"); return ok })
}

// TestTableNullKeyIsNoKey: a record or tombstone without a key belongs to no customer
// and to no partition (partitioners spread null keys), so it is poison of its own
// reason, no_key, on whichever partition it lands, and nothing else is counted. A real
// broker refuses a null key on a compacted topic (a topic compacted later can still hold
// one), but takes an empty one; kfake takes both.
func TestTableNullKeyIsNoKey(t *testing.T) {
	f := newFixture(t, 3, throttletest.Options{})
	good := f.home(rec("acme", 5, time.Hour))
	var keyless []kafka.Message
	for p := range 3 {
		keyless = append(keyless,
			kafka.Message{Partition: p, Key: []byte{}, Value: good.Value}, // a valid value, empty key
			kafka.Message{Partition: p, Key: []byte{}})                    // a tombstone, empty key
		if !throttletest.Real() {
			keyless = append(keyless,
				kafka.Message{Partition: p, Value: good.Value}, // null key
				kafka.Message{Partition: p})                    // a tombstone, null key
		}
	}
	f.put(append([]kafka.Message{good}, keyless...)...)
	tb := f.run()
	wantLimit(t, tb, "acme", 5)
	st := tb.Stats()
	for reason, n := range st.Poison {
		want := int64(0)
		if reason == "no_key" {
			want = int64(len(keyless))
		}
		if n != want {
			t.Errorf("poison %s: %d, want %d (all %v)", reason, n, want, st.Poison)
		}
	}
}

// TestTableHoldsARecordOfAnUnknownSchemaID: a record whose schema id the registry does
// not know (a second region's registry that has not read it yet) holds its partition:
// the table stays unready and counts the attempts, and applies the record and what
// follows once the registry has the id.
func TestTableHoldsARecordOfAnUnknownSchemaID(t *testing.T) {
	f := newFixture(t, 1, throttletest.Options{})
	first := f.msg(0, rec("acme", 5, time.Hour))
	next := binary.BigEndian.Uint32(first.Value[1:5]) + 1
	ahead := f.msg(0, rec("initech", 9, time.Hour))
	ahead.Value = append([]byte(nil), ahead.Value...)
	binary.BigEndian.PutUint32(ahead.Value[1:5], next) // not registered yet
	f.put(first, ahead, f.msg(0, rec("globex", 7, time.Hour)))
	tb := f.start()
	eventually(t, "schema-missing retries", func() bool { return tb.Stats().SchemaMissing >= 2 })
	st := tb.Stats()
	if tb.Ready() || st.Partitions[0].Waiting != 1 {
		t.Fatalf("ready %v, partition waiting at %d: want unready and held at offset 1", tb.Ready(), st.Partitions[0].Waiting)
	}
	if n := st.Poison["unknown_schema"]; n != 0 {
		t.Fatalf("got %d unknown_schema poison, want 0: the record was skipped", n)
	}
	// As a second region's registry gets the id its first region's registry gave.
	f.s.Registry().SeedSchema("mirror-value", 1, int(next), sr.Schema{Schema: throttle.Schema(), Type: sr.TypeAvro})
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	if err := tb.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	wantLimit(t, tb, "acme", 5)
	wantLimit(t, tb, "initech", 9)
	wantLimit(t, tb, "globex", 7)
}

func TestTableRegistryDownRetriesInsteadOfSkipping(t *testing.T) {
	f := newFixture(t, 1, throttletest.Options{})
	f.put(f.msg(0, rec("acme", 5, time.Hour)))
	f.s.StopRegistry() // the table's codec has never seen the schema id
	tb := f.start()
	eventually(t, "registry retries", func() bool { return tb.Stats().RegistryRetries >= 2 })
	if tb.Ready() {
		t.Fatal("got ready with an undecoded record, want not ready")
	}
	if err := f.s.StartRegistry(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	if err := tb.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	wantLimit(t, tb, "acme", 5)
	if n := tb.Stats().Poison["unknown_schema"]; n != 0 {
		t.Fatalf("got %d unknown_schema poison, want 0: a good record was skipped", n)
	}
}

func TestTableExpiryWithoutTombstone(t *testing.T) {
	f := newFixture(t, 1, throttletest.Options{})
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	short := rec("acme", 5, time.Minute)
	long := rec("globex", 6, time.Hour)
	old := rec("initech", 7, time.Hour)
	old.CreatedAt, old.ExpiresAt = old.CreatedAt.Add(-2*time.Hour), old.ExpiresAt.Add(-2*time.Hour) // expired before the rebuild
	f.put(f.msg(0, short), f.msg(0, long), f.msg(0, old))
	var expired []string
	tb := f.run(throttle.WithClock(clock), throttle.WithForgetInterval(10*time.Millisecond), throttle.WithObserver(func(c throttle.Change) {
		if c.Kind == throttle.ChangeExpired {
			mu.Lock()
			expired = append(expired, c.Customer)
			mu.Unlock()
		}
	}))
	wantLimit(t, tb, "acme", 5)
	wantLimit(t, tb, "initech", -1) // expired records are never active, even on replay
	advance(time.Minute)            // acme expires exactly now
	eventually(t, "acme no longer active", func() bool { _, ok := tb.Lookup("acme"); return !ok })
	eventually(t, "acme forgotten", func() bool { mu.Lock(); defer mu.Unlock(); return len(expired) > 1 })
	wantLimit(t, tb, "globex", 6)
	mu.Lock()
	defer mu.Unlock()
	// initech is reported too (it expired before the rebuild read it), so a sweeper can
	// tombstone a key that nobody tombstoned in time.
	if len(expired) != 2 || expired[0] != "initech" || expired[1] != "acme" {
		t.Fatalf("got expired %v, want [initech acme]", expired)
	}
}

func TestTableBrokerRestartMidTail(t *testing.T) {
	f := newFixture(t, 2, throttletest.Options{DataDir: t.TempDir()})
	f.put(f.home(rec("acme", 1, time.Hour)), f.home(rec("globex", 2, time.Hour)))
	var mu sync.Mutex
	seen := map[string]int{}
	tb := f.run(throttle.WithObserver(func(c throttle.Change) {
		mu.Lock()
		seen[fmt.Sprintf("%d@%d", c.Partition, c.Offset)]++
		mu.Unlock()
	}))
	f.s.StopBroker()
	eventually(t, "table notices the broker is gone", func() bool { return !tb.Stats().Fresh })
	wantLimit(t, tb, "acme", 1) // fail-static
	wantLimit(t, tb, "globex", 2)
	if err := f.s.StartBroker(); err != nil {
		t.Fatal(err)
	}
	f.put(f.home(rec("acme", 10, time.Hour)), f.home(rec("initech", 3, time.Hour)))
	eventually(t, "records after restart", func() bool {
		r, ok := tb.Lookup("acme")
		_, ok2 := tb.Lookup("initech")
		return ok && r.Limit == 10 && ok2
	})
	eventually(t, "fresh again", func() bool { return tb.Stats().Fresh })
	wantLimit(t, tb, "globex", 2)
	mu.Lock()
	defer mu.Unlock()
	for off, n := range seen {
		if n != 1 {
			t.Fatalf("record %s applied %d times, want once: the table re-read after the restart", off, n)
		}
	}
	if len(seen) != 4 {
		t.Fatalf("got %d records applied, want 4", len(seen))
	}
}

func TestTablePartitionAdded(t *testing.T) {
	f := newFixture(t, 1, throttletest.Options{})
	f.put(f.msg(0, rec("acme", 1, time.Hour)))
	tb := f.run(throttle.WithRead(follow.WithPartitionDiscovery(50 * time.Millisecond)))
	cl := &kafka.Client{Addr: kafka.TCP(f.s.Brokers()...)}
	resp, err := cl.CreatePartitions(t.Context(), &kafka.CreatePartitionsRequest{Topics: []kafka.TopicPartitionsConfig{{Name: f.topic, Count: 3}}})
	if err != nil || resp.Errors[f.topic] != nil {
		t.Fatalf("create partitions: %v %v", err, resp.Errors)
	}
	eventually(t, "added partitions tracked", func() bool { return len(tb.Stats().Partitions) == 3 })
	c := customerOn(t, 2, 3, 0)
	f.put(f.msg(2, rec(c, 2, time.Hour)))
	eventually(t, "record on the added partition", func() bool { _, ok := tb.Lookup(c); return ok })
	if p := tb.Stats().Partitions[2]; p.Position != 1 {
		t.Fatalf("partition 2: got position %d, want 1", p.Position)
	}
}
