package audit

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// TestFailedFlushIsRepublished: counts whose publish failed are in the next one, and a
// key's latest record holds the incarnation's whole count.
func TestFailedFlushIsRepublished(t *testing.T) {
	topic := &memTopic{}
	at := time.UnixMilli(1_800_000_000_000)
	tl, err := New(Ingestion, "in-1.ab", topic, WithClock(func() time.Time { return at }))
	if err != nil {
		t.Fatal(err)
	}
	tl.Accepted([]kafka.Message{{Partition: 2, Time: at}, {Partition: 2, Time: at}})
	topic.fail = true
	if err := tl.Flush(context.Background(), false); err == nil || tl.Errors() != 1 {
		t.Fatalf("flush to a failing topic: %v, %d errors", err, tl.Errors())
	}
	topic.fail = false
	tl.Accepted([]kafka.Message{{Partition: 2, Time: at}})
	if err := tl.Flush(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	rows := topic.book(t).Reconcile(at.Add(time.Hour), time.Minute)
	if len(rows) != 1 || rows[0].Accepted != 3 || rows[0].Partition != 2 || rows[0].Status != Short || rows[0].Missing != 3 {
		t.Fatalf("rows %+v: want partition 2 with 3 accepted, short by 3 (nothing processed)", rows)
	}
}

// TestUnpublishedIngestionIsNamed: an ingestion incarnation that stops beating without a
// final beat is named in the buckets its last interval touched, and in no others.
func TestUnpublishedIngestionIsNamed(t *testing.T) {
	topic := &memTopic{}
	t0 := time.UnixMilli(1_800_000_000_000) // a bucket's start
	now := t0
	clock := func() time.Time { return now }
	dead, _ := New(Ingestion, "in-dead.01", topic, WithClock(clock), WithInterval(time.Second))
	clean, _ := New(Ingestion, "in-clean.02", topic, WithClock(clock), WithInterval(time.Second))
	for m := range 3 {
		at := t0.Add(time.Duration(m) * time.Minute)
		now = at.Add(30 * time.Second)
		dead.Accepted([]kafka.Message{{Partition: 0, Time: at}})
		clean.Accepted([]kafka.Message{{Partition: 0, Time: at}})
		_ = dead.Flush(context.Background(), false)
	}
	_ = clean.Flush(context.Background(), true)
	rows := topic.book(t).Reconcile(now.Add(time.Hour), 0)
	if len(rows) != 3 {
		t.Fatalf("%d rows, want 3", len(rows))
	}
	for i, r := range rows {
		named := len(r.Unpublished) == 1 && r.Unpublished[0] == "ingestion/in-dead.01"
		if named != (i == 2) {
			t.Fatalf("bucket %d: unpublished %v; only the last bucket, the one open when it died, names it", i, r.Unpublished)
		}
	}
}

// TestBadRecordsAreSkippedAndCounted: keys and values that are not the audit format are
// skipped and counted; a tombstone removes its key.
func TestBadRecordsAreSkippedAndCounted(t *testing.T) {
	b := NewBook(nil, 0)
	good := Key{Tier: Processing, Incarnation: "p/1 x", Partition: 1, Bucket: 60000}
	bad := []kafka.Message{
		{Key: []byte("nonsense"), Value: []byte(`{}`)},
		{Key: []byte("ingestion/x/1/60001"), Value: Value{At: 1, Width: 60000, Accepted: 1}.Encode()}, // not on a bucket edge
		{Key: []byte("ingestion/x/-1/0"), Value: Value{At: 1, Width: 60000}.Encode()},
		{Key: []byte("ingestion/x/01/0"), Value: Value{At: 1, Width: 60000}.Encode()},
		{Key: []byte(good.String()), Value: []byte(`{"at":1,"width_ms":60000,"forwarded":[[5,3]]}`)},
		{Key: []byte(good.String()), Value: []byte(`{"at":1,"width_ms":60000,"accepted":4}`)},
		{Key: []byte(good.String()), Value: []byte(`not json`)},
	}
	for i, m := range bad {
		m.Offset = int64(i)
		_ = b.Apply(context.Background(), m)
	}
	if b.Skipped() != int64(len(bad)) {
		t.Fatalf("skipped %d of %d bad records", b.Skipped(), len(bad))
	}
	_ = b.Apply(context.Background(), kafka.Message{Key: []byte(good.String()), Value: Value{At: 1, Width: 60000, Forwarded: Ranges{{0, 4}}}.Encode()})
	if rows := b.Reconcile(time.UnixMilli(1e12), 0); len(rows) != 1 || rows[0].Forwarded != 4 || rows[0].Status != Over {
		t.Fatalf("rows %+v: want one over by 4", rows)
	}
	_ = b.Apply(context.Background(), kafka.Message{Key: []byte(good.String())})
	if rows := b.Reconcile(time.UnixMilli(1e12), 0); len(rows) != 0 {
		t.Fatalf("rows %+v after the tombstone, want none", rows)
	}
}

// FuzzParse: whatever bytes the audit topic holds, parse either refuses them or returns
// a key and value that encode back to themselves.
func FuzzParse(f *testing.F) {
	f.Add([]byte("processing/p%2F1/3/120000"), []byte(`{"at":5,"width_ms":60000,"forwarded":[[1,9]],"dead_lettered":[[9,10]]}`))
	f.Add([]byte("ingestion/i.1"), []byte(`{"at":5,"every_ms":5000,"final":true}`))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		k, v, err := parse(kafka.Message{Key: key, Value: value})
		if err != nil {
			return
		}
		k2, err := ParseKey([]byte(k.String()))
		if err != nil || k2 != k {
			t.Fatalf("key %q parsed as %+v, which reads back as %+v (%v)", key, k, k2, err)
		}
		if v == nil {
			return
		}
		v2, err := Decode(k, v.Encode())
		if err != nil || v2.At != v.At || v2.Accepted != v.Accepted || v2.Forwarded.Len() != v.Forwarded.Len() || v2.DeadLettered.Len() != v.DeadLettered.Len() {
			t.Fatalf("value %q decoded as %+v, which reads back as %+v (%v)", value, v, v2, err)
		}
	})
}

// TestCountBeyondMaxRangesStaysSmall: offsets that would need more than MaxRanges ranges
// (a bucket interleaved with its neighbours on every other offset) are still counted,
// the record stays far below a broker's message size, and the reconciliation adds them.
func TestCountBeyondMaxRangesStaysSmall(t *testing.T) {
	topic := &memTopic{}
	at := time.UnixMilli(1_800_000_000_000)
	tl, _ := New(Processing, "p.1", topic, WithClock(func() time.Time { return at }))
	const n = 3 * MaxRanges
	for off := range int64(n) {
		tl.Handled(0, 2*off, at, "", false) // every other offset: one range each
	}
	if err := tl.Flush(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	for _, m := range topic.msgs {
		if len(m.Value) > 512<<10 {
			t.Fatalf("a record of %d bytes", len(m.Value))
		}
	}
	rows := topic.book(t).Reconcile(at.Add(time.Hour), 0)
	if len(rows) != 1 || rows[0].Forwarded != n || rows[0].Duplicates != 0 {
		t.Fatalf("rows %+v: want %d forwarded, no duplicates", rows, n)
	}
}

// TestBookKeepsOnlyItsWindow: a Book with a window keeps the counts of buckets that
// ended within it, whether they are old when read or grow old after.
func TestBookKeepsOnlyItsWindow(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	b := NewBook(nil, time.Hour)
	b.now = func() time.Time { return now }
	put := func(bucket time.Time) {
		k := Key{Tier: Ingestion, Incarnation: "i", Partition: 0, Bucket: bucketOf(bucket, 60000)}
		_ = b.Apply(context.Background(), kafka.Message{Key: []byte(k.String()), Value: Value{At: 1, Width: 60000, Accepted: 1}.Encode()})
	}
	put(now.Add(-2 * time.Hour))    // ended before the window: dropped as read
	put(now.Add(-30 * time.Minute)) // within it
	if rows := b.Reconcile(now, 0); len(rows) != 1 {
		t.Fatalf("%d rows, want the one within the hour", len(rows))
	}
	if rows := b.Reconcile(now.Add(45*time.Minute), 0); len(rows) != 0 {
		t.Fatalf("%d rows 45 minutes later, want none: the bucket left the window", len(rows))
	}
}

// TestFinalStaysFinal: a publish after the final one (Run's ticker, racing the shutdown)
// does not make a cleanly stopped incarnation look killed.
func TestFinalStaysFinal(t *testing.T) {
	topic := &memTopic{}
	now := time.UnixMilli(1_800_000_000_000)
	tl, _ := New(Ingestion, "in.1", topic, WithClock(func() time.Time { return now }), WithInterval(time.Second))
	tl.Accepted([]kafka.Message{{Partition: 0, Time: now}})
	_ = tl.Flush(context.Background(), true)
	_ = tl.Flush(context.Background(), false)
	rows := topic.book(t).Reconcile(now.Add(time.Hour), 0)
	if len(rows) != 1 || len(rows[0].Unpublished) != 0 {
		t.Fatalf("rows %+v: want the incarnation stopped cleanly", rows)
	}
}

// TestEagerPublishesAtOnce: an eager tally publishes a count within its gap, not its
// interval; a plain one waits for the interval.
func TestEagerPublishesAtOnce(t *testing.T) {
	for _, eager := range []bool{true, false} {
		topic := &memTopic{}
		opts := []Opt{WithInterval(time.Hour)}
		if eager {
			opts = append(opts, WithEager(10*time.Millisecond))
		}
		tl, err := New(Processing, "p.1", topic, opts...)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { tl.Run(ctx); close(done) }()
		tl.Handled(0, 7, time.Now(), "e-7", false)
		time.Sleep(300 * time.Millisecond)
		cancel()
		<-done
		topic.mu.Lock()
		n := len(topic.msgs)
		topic.mu.Unlock()
		if published := n > 0; published != eager {
			t.Fatalf("eager %v: %d records published within 300ms of a count, interval 1h", eager, n)
		}
	}
	if _, err := New(Processing, "p.1", &memTopic{}, WithInterval(time.Second), WithEager(2*time.Second)); err == nil {
		t.Fatal("a gap longer than the interval was accepted")
	}
}

// TestReadAgainIsADuplicate: a reader that reads offsets again (a rebalance gave it back
// its partition before a commit) counts each second handling as a duplicate, whether it
// forwards or dead-letters it the second time, and the bucket stays complete.
func TestReadAgainIsADuplicate(t *testing.T) {
	topic := &memTopic{}
	at := time.UnixMilli(1_800_000_000_000)
	clock := WithClock(func() time.Time { return at })
	in, _ := New(Ingestion, "in.01", topic, clock)
	proc, _ := New(Processing, "proc.01", topic, clock)
	msgs := make([]kafka.Message, 10)
	for i := range msgs {
		msgs[i] = kafka.Message{Partition: 0, Time: at}
	}
	in.Accepted(msgs)
	for off := range int64(10) {
		proc.Handled(0, off, at, "ev-"+strconv.FormatInt(off, 10), off == 3)
	}
	for off := int64(2); off < 10; off++ { // read again from the commit at 2
		proc.Handled(0, off, at, "ev-"+strconv.FormatInt(off, 10), off == 4)
	}
	_ = in.Flush(context.Background(), true)
	_ = proc.Flush(context.Background(), true)
	rows := topic.book(t).Reconcile(at.Add(time.Hour), 0)
	if len(rows) != 1 || rows[0].Forwarded != 9 || rows[0].DeadLettered != 1 || rows[0].Duplicates != 8 || rows[0].Status != Complete {
		t.Fatalf("rows %+v: want 9 forwarded, 1 dead-lettered, 8 duplicates, complete", rows)
	}
}
