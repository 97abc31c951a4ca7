package throttle_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/follow"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
)

// shapeFixture is a fixture whose topic's log is served by a fakeLog.
type shapeFixture struct {
	*fixture
	log *fakeLog
}

func newShapeFixture(t *testing.T, partitions int) *shapeFixture {
	throttletest.RequireKfake(t, "serves hand-built record batches through kfake's request hooks")
	f := newFixture(t, partitions, throttletest.Options{})
	return &shapeFixture{fixture: f, log: newFakeLog(f.s.Cluster(), f.topic, partitions, 1)}
}

func (f *shapeFixture) set(customer string, limit int64) fakeRec {
	m := f.msg(0, rec(customer, limit, time.Hour))
	return fakeRec{key: m.Key, value: m.Value}
}

func lift(customer string) fakeRec { return fakeRec{key: []byte(customer)} }

// TestReadsEveryBatchShape serves each shape a real broker's log can take and checks
// that a table rebuilt from it, and a table that followed it live, hold exactly the
// latest value of every key, and count nothing as poison that is not.
func TestReadsEveryBatchShape(t *testing.T) {
	type want struct {
		limits map[string]int64 // -1: absent
		poison map[string]int64
		skip   int64
	}
	for _, tc := range []struct {
		name  string
		build func(f *shapeFixture)
		want  want
	}{
		{"empty batch first in the log, alone in its segment", func(f *shapeFixture) {
			f.log.appendBatch(0, nil, 5)
			f.log.roll(0)
			f.log.appendBatch(0, []fakeRec{f.set("acme", 1)}, 0)
		}, want{limits: map[string]int64{"acme": 1}}},
		{"several empty batches in a row, each alone in a response", func(f *shapeFixture) {
			f.log.appendBatch(0, []fakeRec{f.set("acme", 1)}, 0)
			for range 4 {
				f.log.roll(0)
				f.log.appendBatch(0, nil, 3)
			}
			f.log.roll(0)
			f.log.appendBatch(0, []fakeRec{f.set("globex", 2)}, 0)
		}, want{limits: map[string]int64{"acme": 1, "globex": 2}}},
		{"empty batch last before the high watermark", func(f *shapeFixture) {
			f.log.appendBatch(0, []fakeRec{f.set("acme", 1), f.set("globex", 2)}, 0)
			f.log.appendBatch(0, nil, 40)
		}, want{limits: map[string]int64{"acme": 1, "globex": 2}}},
		{"compacted tail at a segment's end", func(f *shapeFixture) {
			f.log.appendBatch(0, []fakeRec{f.set("acme", 1)}, 77)
			f.log.roll(0)
			f.log.appendBatch(0, []fakeRec{f.set("globex", 2)}, 0)
		}, want{limits: map[string]int64{"acme": 1, "globex": 2}}},
		{"cleaned log: the real cleaner's output with empty batches kept", func(f *shapeFixture) {
			for i := range 6 {
				f.log.appendBatch(0, []fakeRec{f.set("acme", int64(i)), f.set(fmt.Sprintf("c%d", i), int64(i)), lift("gone")}, 0)
				f.log.roll(0)
			}
			f.log.compact(0, func() bool { return true }, false, false)
			f.log.appendBatch(0, []fakeRec{f.set("tail", 9)}, 0)
		}, want{limits: map[string]int64{"acme": 5, "c0": 0, "c5": 5, "gone": -1, "tail": 9}}},
		{"batch starting before the log start", func(f *shapeFixture) {
			f.log.appendBatchDeleting(0, []fakeRec{f.set("old1", 1), f.set("old2", 2), f.set("acme", 3), f.set("globex", 4)}, 2)
		}, want{limits: map[string]int64{"old1": -1, "old2": -1, "acme": 3, "globex": 4}}},
		{"transaction markers are skipped, not poison", func(f *shapeFixture) {
			f.log.appendTxn(0, 42, []fakeRec{f.set("acme", 1)}, true)
			f.log.appendTxn(0, 42, []fakeRec{f.set("globex", 2)}, true)
		}, want{limits: map[string]int64{"acme": 1, "globex": 2}, poison: map[string]int64{}}},
		{"records of aborted transactions are never applied", func(f *shapeFixture) {
			f.log.appendBatch(0, []fakeRec{f.set("acme", 1)}, 0)
			f.log.appendTxn(0, 7, []fakeRec{f.set("acme", 99), f.set("evil", 99), lift("globex")}, false)
			f.log.appendBatch(0, []fakeRec{f.set("globex", 2)}, 0)
			f.log.appendTxn(0, 8, []fakeRec{f.set("initech", 3)}, true)
		}, want{limits: map[string]int64{"acme": 1, "evil": -1, "globex": 2, "initech": 3}}},
		{"compressed batches from other producers, with compacted tails", func(f *shapeFixture) {
			for i, codec := range []kafka.Compression{kafka.Gzip, kafka.Snappy, kafka.Lz4, kafka.Zstd} {
				f.log.appendCompressed(0, codec, []fakeRec{f.set(fmt.Sprintf("z%d", i), int64(i)), lift("gone"), f.set("acme", int64(i))}, 0)
				f.log.roll(0)
				f.log.appendCompressed(0, codec, []fakeRec{f.set(fmt.Sprintf("tail%d", i), int64(i))}, 9) // ends past its last record
				f.log.roll(0)
			}
		}, want{limits: map[string]int64{"z0": 0, "z1": 1, "z2": 2, "z3": 3, "tail3": 3, "acme": 3, "gone": -1}}},
		{"a zero-length value is poison, not a tombstone", func(f *shapeFixture) {
			f.log.appendBatch(0, []fakeRec{f.set("acme", 1)}, 0)
			f.log.appendBatch(0, []fakeRec{{key: []byte("acme"), value: []byte{}}}, 0)
		}, want{limits: map[string]int64{"acme": 1}, poison: map[string]int64{"truncated": 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			check := func(tb *throttle.Table, how string) {
				t.Helper()
				for c, lim := range tc.want.limits {
					r, ok := tb.Lookup(c)
					switch {
					case lim < 0 && ok:
						t.Errorf("%s: Lookup(%q): got limit %d, want absent", how, c, r.Limit)
					case lim >= 0 && (!ok || r.Limit != lim):
						t.Errorf("%s: Lookup(%q): got %d (found %v), want %d", how, c, r.Limit, ok, lim)
					}
				}
				st := tb.Stats()
				for reason, n := range st.Poison {
					if n != tc.want.poison[reason] {
						t.Errorf("%s: poison %s: got %d, want %d", how, reason, n, tc.want.poison[reason])
					}
				}
			}
			f := newShapeFixture(t, 1)
			live := f.run() // on the empty log: follows every shape as it is written
			tc.build(f)
			end := f.log.end(0)
			eventually(t, "live table at the log end", func() bool { return tb0Position(live) >= end })
			check(live, "live")
			rebuilt := f.run()
			if got := tb0Position(rebuilt); got < end {
				t.Fatalf("rebuilt: ready at position %d, want >= %d", got, end)
			}
			check(rebuilt, "rebuilt")

			// Scan (throttlectl's dump and restore) reads the same records.
			scanned := map[string]int64{}
			ranges, err := follow.Scan(t.Context(), f.s.Kafka(), f.topic, func(m kafka.Message) error {
				if m.Value == nil {
					delete(scanned, string(m.Key))
					return nil
				}
				if r, err := f.codec.Decode(m.Value); err == nil {
					scanned[r.Customer] = r.Limit
				}
				return nil
			})
			if err != nil || len(ranges) != 1 || ranges[0].End != end {
				t.Fatalf("scan: got %+v, %v; want one range ending at %d", ranges, err, end)
			}
			for c, lim := range tc.want.limits {
				if got, ok := scanned[c]; ok != (lim >= 0) || (ok && got != lim) {
					t.Errorf("scan: %s: got %d (found %v), want %d", c, got, ok, lim)
				}
			}
		})
	}
}

func tb0Position(tb *throttle.Table) int64 { return tb.Stats().Partitions[0].Position }

// TestLogStartPassesAHeldPosition: a partition held at a record (its schema cannot be
// fetched) while retention removes what follows resumes at the new log start and counts
// the offsets it never read.
func TestLogStartPassesAHeldPosition(t *testing.T) {
	f := newShapeFixture(t, 1)
	var recs []fakeRec
	for i := range 10 {
		recs = append(recs, f.set(fmt.Sprintf("c%d", i), int64(i)))
	}
	for _, r := range recs { // a segment each, so the first fetch brings only offset 0
		f.log.appendBatch(0, []fakeRec{r}, 0)
		f.log.roll(0)
	}
	f.s.StopRegistry()
	tb := f.start()
	eventually(t, "partition held at offset 0", func() bool {
		ps := tb.Stats().Partitions
		return len(ps) == 1 && ps[0].Waiting == 0
	})
	f.log.deleteRecords(0, 6)
	if err := f.s.StartRegistry(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := tb.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	p := tb.Stats().Partitions[0]
	// Offsets 1..5 were removed while the partition was held at 0. Those the loop had
	// already fetched (read ahead before the removal) are applied; every other one is
	// counted as skipped: no offset is passed over without being applied or counted.
	if p.Waiting != -1 || p.SkippedOffsets < 1 || p.SkippedOffsets > 5 {
		t.Fatalf("got skipped %d, waiting %d; want 1 to 5 offsets of 1..5 skipped and nothing waiting", p.SkippedOffsets, p.Waiting)
	}
	read := 5 - p.SkippedOffsets // read ahead before the removal: offsets 1..read
	for i := range int64(10) {
		want := i
		if i >= 1+read && i <= 5 {
			want = -1
		}
		wantLimit(t, tb, fmt.Sprintf("c%d", i), want)
	}
	t.Logf("%d offsets skipped and counted, %d read ahead before the removal", p.SkippedOffsets, read)
}
