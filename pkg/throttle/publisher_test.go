package throttle_test

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/goleak"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/pkg/throttle/expiry"
	"github.com/sluice-dev/sluice/pkg/throttle/follow"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
)

func (f *fixture) publisher() *throttle.Publisher {
	f.t.Helper()
	p, err := throttle.NewPublisher(f.s.Kafka(), f.topic, f.codec)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = p.Close() })
	return p
}

// logOf reads the partition holding key from its log start and returns that key's
// records in order.
func logOf(t *testing.T, f *fixture, key string) []kafka.Message {
	t.Helper()
	var out []kafka.Message
	cl := &kafka.Client{Addr: kafka.TCP(f.s.Brokers()...)}
	meta, err := cl.Metadata(t.Context(), &kafka.MetadataRequest{Topics: []string{f.topic}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range meta.Topics[0].Partitions {
		lo, err := cl.ListOffsets(t.Context(), &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{f.topic: {kafka.FirstOffsetOf(p.ID), kafka.LastOffsetOf(p.ID)}}})
		if err != nil {
			t.Fatal(err)
		}
		po := lo.Topics[f.topic][0]
		for off := po.FirstOffset; off < po.LastOffset; {
			resp, err := cl.Fetch(t.Context(), &kafka.FetchRequest{Topic: f.topic, Partition: p.ID, Offset: off, MaxBytes: 1 << 20})
			if err != nil || resp.Error != nil {
				t.Fatalf("fetch: %v %v", err, resp.Error)
			}
			n := 0
			for {
				r, err := resp.Records.ReadRecord()
				if err != nil {
					break
				}
				n++
				off = r.Offset + 1
				k := readAll(r.Key)
				if string(k) != key {
					continue
				}
				m := kafka.Message{Partition: p.ID, Offset: r.Offset, Key: k, Headers: r.Headers}
				if r.Value != nil {
					m.Value = readAll(r.Value)
				}
				out = append(out, m)
			}
			if n == 0 {
				break
			}
		}
	}
	return out
}

func readAll(r interface{ Read([]byte) (int, error) }) []byte {
	if r == nil {
		return nil
	}
	var b bytes.Buffer
	_, _ = b.ReadFrom(r)
	return b.Bytes()
}

func TestPublisherSetAndLift(t *testing.T) {
	f := newFixture(t, 3, throttletest.Options{})
	tb := f.run()
	p := f.publisher()
	r := rec("acme", 20, 10*time.Minute)
	for range 2 { // the same record twice (a retried write) gives the same state
		if err := p.Set(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "acme visible", func() bool { _, ok := tb.Lookup("acme"); return ok })
	eventually(t, "both copies applied", func() bool { return tb.Stats().Applied == 2 })
	got, _ := tb.Get("acme")
	if !reflect.DeepEqual(got, r) || len(tb.Active()) != 1 {
		t.Fatalf("got %+v (%d active), want %+v alone", got, len(tb.Active()), r)
	}
	// Murmur2 places the key where a Java client would: every record of acme on one partition.
	msgs := logOf(t, f, "acme")
	if len(msgs) != 2 || msgs[0].Partition != msgs[1].Partition {
		t.Fatalf("got %d records of acme on partitions %v, want 2 on one", len(msgs), msgs)
	}
	if want := (&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: []byte("acme")}, 0, 1, 2); msgs[0].Partition != want {
		t.Fatalf("got partition %d, want murmur2's %d", msgs[0].Partition, want)
	}
	if err := p.Lift(t.Context(), "acme"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "acme lifted", func() bool { _, ok := tb.Lookup("acme"); return !ok })
	if last := logOf(t, f, "acme"); last[len(last)-1].Value != nil {
		t.Fatalf("got last value %x, want a tombstone (nil)", last[len(last)-1].Value)
	}
	if err := p.Set(t.Context(), throttle.Record{Customer: "bad\x00"}); err == nil {
		t.Fatal("Set of an invalid record: got nil, want an error")
	}
}

// sweeping starts a table and a sweeper on it, the way a processing instance runs them.
func (f *fixture) sweeping(opts ...expiry.Opt) (*throttle.Table, *expiry.Sweeper) {
	f.t.Helper()
	return f.sweepingWith(nil, nil, opts...)
}

// sweepingWith is sweeping with more table options, and observe also told every change.
func (f *fixture) sweepingWith(observe func(throttle.Change), tableOpts []throttle.Option, opts ...expiry.Opt) (*throttle.Table, *expiry.Sweeper) {
	f.t.Helper()
	var sw *expiry.Sweeper
	var mu sync.Mutex
	tb := f.start(append(tableOpts, throttle.WithForgetInterval(10*time.Millisecond), throttle.WithObserver(func(c throttle.Change) {
		if observe != nil {
			observe(c)
		}
		mu.Lock()
		s := sw
		mu.Unlock()
		if s != nil {
			s.Observe(c)
		}
	}))...)
	s, err := expiry.New(f.publisher(), tb, append([]expiry.Opt{expiry.WithGrace(0), expiry.WithInterval(20 * time.Millisecond)}, opts...)...)
	if err != nil {
		f.t.Fatal(err)
	}
	mu.Lock()
	sw = s
	mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	f.t.Cleanup(func() { cancel(); <-done })
	ctx2, cancel2 := context.WithTimeout(f.t.Context(), 20*time.Second)
	defer cancel2()
	if err := tb.WaitReady(ctx2); err != nil {
		f.t.Fatal(err)
	}
	return tb, s
}

// renewingSweeper starts a table and a sweeper on it in which the sweeper's race (see
// Sweeper) happens for sure: the sweeper has decided t1 expired and checked its table;
// before its tombstone is written, t2 (the same customer's renewal) is published with p
// and applied. It also returns when t2 was acknowledged.
func (f *fixture) renewingSweeper(p *throttle.Publisher, t1, t2 throttle.Record) (*throttle.Table, func() time.Time) {
	f.t.Helper()
	var once sync.Once
	var tb *throttle.Table
	var renewed atomic.Int64 // unix ns
	tb, _ = f.sweeping(expiry.WithBeforeTombstone(func(r throttle.Record) {
		if r.ID != t1.ID {
			return
		}
		once.Do(func() {
			if err := p.Set(context.Background(), t2); err != nil {
				f.t.Error(err)
				return
			}
			renewed.Store(time.Now().UnixNano())
			eventually(f.t, "T2 applied before the tombstone", func() bool {
				c, ok := tb.Lookup(t2.Customer)
				return ok && c.ID() == t2.ID
			})
		})
	}))
	return tb, func() time.Time { return time.Unix(0, renewed.Load()) }
}

func newCompactingFixture(t *testing.T) *fixture {
	t.Helper()
	s := throttletest.Start(t, throttletest.Options{})
	topic := "throttles-" + sanitize(t.Name())
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	// Tombstones may be dropped by compaction 1ms after they are written, so the test can
	// see a key leave the log.
	if _, err := throttle.EnsureTopic(ctx, s.Kafka(), throttle.TopicSpec{Name: topic, Partitions: 1, DeleteRetention: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, s: s, topic: topic, codec: s.Codec(t, topic)}
}

// compactAway writes a filler record (kfake never compacts the newest batch), waits past
// delete.retention.ms and compacts.
func compactAway(t *testing.T, f *fixture) {
	t.Helper()
	throttletest.RequireKfake(t, "compaction on demand (Compact); real Kafka never compacts the active segment")
	f.put(f.msg(0, rec(fmt.Sprintf("filler-%d", time.Now().UnixNano()), 1, time.Hour)))
	time.Sleep(20 * time.Millisecond)
	f.s.Compact()
}

func TestSweeperTombstonesExpiredThrottles(t *testing.T) {
	f := newCompactingFixture(t)
	// Two processing instances sweep at once: duplicate tombstones are harmless.
	tb1, sw1 := f.sweeping()
	tb2, sw2 := f.sweeping()
	p := f.publisher()
	r := rec("acme", 20, 300*time.Millisecond)
	if err := p.Set(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if err := p.Set(t.Context(), rec("globex", 5, time.Hour)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "tombstone on the topic", func() bool {
		l := logOf(t, f, "acme")
		return len(l) >= 2 && l[len(l)-1].Value == nil
	})
	last := logOf(t, f, "acme")
	tombstone := last[len(last)-1]
	wantHeaders := []kafka.Header{
		{Key: throttle.HeaderExpires, Value: []byte(r.ID)},
		{Key: throttle.HeaderExpiresCreated, Value: []byte(strconv.FormatInt(r.CreatedAt.UnixMilli(), 10))},
	}
	if fmt.Sprint(tombstone.Headers) != fmt.Sprint(wantHeaders) {
		t.Fatalf("got tombstone headers %v, want %v", tombstone.Headers, wantHeaders)
	}
	for _, tb := range []*throttle.Table{tb1, tb2} {
		wantLimit(t, tb, "acme", -1)
		wantLimit(t, tb, "globex", 5)
	}
	// Both sweepers are done writing (one or two tombstones, both harmless) before the
	// log is compacted, so no tombstone lands after the compaction.
	idle := func() bool {
		a, b := sw1.Pending()
		c, d := sw2.Pending()
		return a+b+c+d == 0
	}
	eventually(t, "sweepers idle", idle)
	time.Sleep(200 * time.Millisecond) // ten table sweeps: the slower table has expired acme too
	eventually(t, "sweepers still idle", idle)
	compactAway(t, f)
	if l := logOf(t, f, "acme"); len(l) != 0 {
		t.Fatalf("got %d records of acme after compaction, want the key gone", len(l))
	}
	if l := logOf(t, f, "globex"); len(l) != 1 {
		t.Fatalf("got %d records of globex after compaction, want 1", len(l))
	}
}

func TestSweeperNeverLosesANewerThrottle(t *testing.T) {
	f := newCompactingFixture(t)
	p := f.publisher()
	t1 := rec("acme", 20, 300*time.Millisecond)
	t2 := rec("acme", 40, time.Hour)
	t2.ID = "t2-renewal"
	tb, _ := f.renewingSweeper(p, t1, t2)
	if err := p.Set(t.Context(), t1); err != nil {
		t.Fatal(err)
	}
	// The log must end up: T1, T2, tombstone(T1), T2 again.
	eventually(t, "T2 re-published after the stale tombstone", func() bool {
		l := logOf(t, f, "acme")
		return len(l) == 4 && l[2].Value == nil && l[3].Value != nil
	})
	wantLimit(t, tb, "acme", 40) // never lost by the live table
	compactAway(t, f)
	l := logOf(t, f, "acme")
	if len(l) != 1 || l[0].Value == nil {
		t.Fatalf("got %d records of acme after compaction, want T2 alone", len(l))
	}
	fresh := f.run() // a replica rebuilding from offset zero after compaction
	got, ok := fresh.Lookup("acme")
	if !ok || got.ID() != t2.ID {
		t.Fatalf("rebuilt table: got %+v (found %v), want T2", got, ok)
	}
}

func TestPublisherBrokerDown(t *testing.T) {
	f := newFixture(t, 1, throttletest.Options{})
	if _, err := f.codec.Register(); err != nil { // not the registry's fault below
		t.Fatal(err)
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	p, err := throttle.NewPublisher(f.s.Kafka(), f.topic, f.codec, throttle.WithRetries(3, 10*time.Millisecond, 50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	f.s.StopBroker()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	start := time.Now()
	err = p.Set(ctx, rec("acme", 1, time.Hour))
	if err == nil {
		t.Fatal("got nil with the broker down, want an error")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Set returned after %s, want within its 1s deadline (+ slack)", d)
	}
	if err := p.Close(); err != nil {
		t.Logf("close: %v", err)
	}
}

// A poison record under a throttled customer's key would, once compacted, leave the key
// holding only the poison record: every table skips it, and a replica rebuilding after
// compaction would not know the throttle. The sweeper writes the throttle again after it.
func TestSweeperRepairsAThrottleBehindAPoisonRecord(t *testing.T) {
	f := newCompactingFixture(t)
	tb, _ := f.sweeping()
	var changes sync.Map
	watched := f.start(throttle.WithObserver(func(c throttle.Change) { changes.Store(c.Kind, c) }))
	p := f.publisher()
	t1 := rec("acme", 20, time.Hour)
	if err := p.Set(t.Context(), t1); err != nil {
		t.Fatal(err)
	}
	eventually(t, "T1 applied", func() bool { _, ok := tb.Lookup("acme"); return ok })
	f.put(kafka.Message{Key: []byte("acme"), Value: []byte("not a throttle")}) // bad magic byte

	// The log must end: T1, poison, T1 again.
	eventually(t, "T1 re-published after the poison record", func() bool {
		l := logOf(t, f, "acme")
		return len(l) == 3 && l[2].Value != nil && string(l[1].Value) == "not a throttle"
	})
	wantLimit(t, tb, "acme", 20) // the live table never lost it
	eventually(t, "the change reported", func() bool {
		c, ok := changes.Load(throttle.ChangePoisoned)
		return ok && c.(throttle.Change).Record.ID == t1.ID
	})
	if got := watched.Stats().Poison["bad_magic"]; got != 1 {
		t.Fatalf("poison counted %d times, want 1", got)
	}
	compactAway(t, f)
	if l := logOf(t, f, "acme"); len(l) != 1 || l[0].Value == nil || string(l[0].Value) == "not a throttle" {
		t.Fatalf("after compaction acme's log is %d records, want T1 alone", len(l))
	}
	fresh := f.run() // a replica rebuilding from offset zero after compaction
	if got, ok := fresh.Lookup("acme"); !ok || got.ID() != t1.ID {
		t.Fatalf("rebuilt table: got %+v (found %v), want T1", got, ok)
	}
}

// Each constructor refuses what is meant for the other, and nil: an option that would
// silently do nothing is a mistake to report.
func TestOptionsAreCheckedByTheirConstructor(t *testing.T) {
	kc := cluster.Config{Brokers: []string{"127.0.0.1:1"}}
	codec, err := throttle.NewCodec(throttle.RegistryConfig{URL: "http://127.0.0.1:1"}, "t")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  func() error
		want string
	}{
		{"table option to a publisher", func() error {
			_, err := throttle.NewPublisher(kc, "t", codec, throttle.WithObserver(func(throttle.Change) {}))
			return err
		}, "WithObserver applies to a Table, not a Publisher"},
		{"logger to a publisher", func() error {
			_, err := throttle.NewPublisher(kc, "t", codec, throttle.WithLogger(nil))
			return err
		}, "WithLogger applies to a Table"},
		{"publisher option to a table", func() error {
			_, err := throttle.NewTable(kc, "t", codec, throttle.WithRetries(1, time.Millisecond, time.Millisecond))
			return err
		}, "withRetries applies to a Publisher, not a Table"},
		{"nil option", func() error {
			_, err := throttle.NewTable(kc, "t", codec, nil)
			return err
		}, "nil option"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.err()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
	if _, err := throttle.NewTable(kc, "t", codec, throttle.WithLogger(nil), throttle.WithRead(follow.WithPollInterval(time.Second))); err != nil {
		t.Fatalf("table options to a table: %v", err)
	}
}
