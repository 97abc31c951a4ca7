package throttle_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/expiry"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
)

// The embedded broker of the local stack ignores min.compaction.lag.ms (it compacts on a
// timer). This is why that is safe where a processing replica runs: the worst case, the
// broker compacting right after a stale expiry tombstone and before the sweeper's repair,
// drops the renewal T2 from the log, but not from the tables that followed it, and the
// repair writes T2 again from the table's memory; a table rebuilt after that holds T2.
// What the lag buys on a real cluster is only the time for a processing replica to come
// back when none was running to repair (see TestRealSweeperUnderCompactionLag).
func TestSweeperRepairSurvivesCompactionBeforeIt(t *testing.T) {
	throttletest.RequireKfake(t, "the embedded broker's compaction on demand (Compact), whose timing this test chooses")
	f := newCompactingFixture(t)
	p := f.publisher()
	t1 := rec("acme", 20, 300*time.Millisecond)
	t2 := rec("acme", 40, time.Hour)
	t2.ID = "t2-renewal"
	stale := make(chan struct{})
	compacted := make(chan struct{})
	var once, release sync.Once
	var tb *throttle.Table
	// The table reports the stale tombstone; the sweeper hears of it only once the broker
	// has compacted.
	tb, _ = f.sweepingWith(func(c throttle.Change) {
		if c.Kind == throttle.ChangeStaleTombstone {
			once.Do(func() { close(stale); <-compacted })
		}
	}, nil, expiry.WithBeforeTombstone(func(r throttle.Record) {
		if r.ID == t1.ID {
			if err := p.Set(context.Background(), t2); err != nil {
				t.Error(err)
			}
			eventually(t, "T2 applied before the tombstone", func() bool { c, ok := tb.Lookup("acme"); return ok && c.ID() == t2.ID })
		}
	}))
	// Registered after the table's own cleanup, so it runs first: a test that stops
	// early must not leave the table's goroutine waiting.
	t.Cleanup(func() { release.Do(func() { close(compacted) }) })
	if err := p.Set(t.Context(), t1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stale:
	case <-time.After(20 * time.Second):
		t.Fatal("no stale tombstone seen")
	}
	compactAway(t, f)
	for _, m := range logOf(t, f, "acme") {
		if m.Value != nil {
			t.Fatalf("after compaction acme's log still holds a throttle (offset %d): the worst case did not happen", m.Offset)
		}
	}
	release.Do(func() { close(compacted) })
	wantLimit(t, tb, "acme", 40) // the table that followed never lost T2
	eventually(t, "T2 re-published after compaction", func() bool {
		l := logOf(t, f, "acme")
		return len(l) > 0 && l[len(l)-1].Value != nil
	})
	if got, ok := f.run().Lookup("acme"); !ok || got.ID() != t2.ID {
		t.Fatalf("rebuilt after the repair: got %+v (found %v), want T2", got, ok)
	}
}
