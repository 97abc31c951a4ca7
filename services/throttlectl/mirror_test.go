package main

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/pkg/throttle/expiry"
	"github.com/sluice-dev/sluice/pkg/throttle/follow"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest/kafkacluster"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest/registry"
	"github.com/sluice-dev/sluice/services/platform/mirror"
)

// The two-region tests: region A publishes throttles, MirrorMaker 2 (run with the
// repository's deploy/mirrormaker/mm2.properties) copies the throttle topic and _schemas
// to region B, and B's tables enforce them. Each region is a real one-node cluster with
// its own registry; B's follows the mirrored _schemas read-only.

const mirrorTopic = throttle.DefaultTopic

// region is one region: its cluster, its registry (served over HTTP) and a codec.
type region struct {
	name    string
	cluster *kafkacluster.Cluster
	kc      cluster.Config
	url     string
	reg     *registry.Server
	srv     *httptest.Server
	handler atomic.Pointer[http.Handler] // the registry srv serves; swapped on failover
}

func startRegion(t *testing.T, name string, readOnly bool) *region {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c, err := kafkacluster.Start(ctx, kafkacluster.Config{Nodes: 1, HeapMB: 256, BrokerConfigs: map[string]string{
		// The cleaner runs within seconds, so that B's log is compacted over
		// MirrorMaker's batches before a replica rebuilds from it.
		"log.cleaner.backoff.ms":          "300",
		"log.cleaner.min.cleanable.ratio": "0.01",
	}})
	if err != nil {
		t.Fatalf("region %s: %v", name, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	r := &region{name: name, cluster: c, kc: cluster.Config{Brokers: c.Brokers()}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { (*r.handler.Load()).ServeHTTP(w, req) }))
	r.url = r.srv.URL
	r.serveRegistry(t, readOnly)
	t.Cleanup(func() { r.srv.Close(); r.reg.Close() })
	return r
}

// serveRegistry (re)starts the region's registry on its cluster, read-only or writable,
// behind the same URL: what an operator does to B's registry on failover and failback.
func (r *region) serveRegistry(t *testing.T, readOnly bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	opts := []registry.Option{registry.WithBrokers(r.cluster.Brokers()...)}
	if readOnly {
		opts = append(opts, registry.WithReadOnly())
	}
	reg, err := registry.New(ctx, opts...)
	if err != nil {
		t.Fatalf("region %s registry: %v", r.name, err)
	}
	h := reg.Handler()
	r.handler.Store(&h)
	if old := r.reg; old != nil {
		old.Close()
	}
	r.reg = reg
}

func (r *region) codec(t *testing.T) *throttle.Codec {
	t.Helper()
	c, err := throttle.NewCodec(throttle.RegistryConfig{URL: r.url, Timeout: 2 * time.Second}, mirrorTopic)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// mirrorProperties is the shipped mm2.properties with the test's clusters: bootstrap
// servers, replication factors of one, and intervals short enough for a test.
func mirrorProperties(t *testing.T, a, b *region) string {
	t.Helper()
	f, err := os.Open("../../deploy/mirrormaker/mm2.properties")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	over := map[string]string{
		"a.bootstrap.servers": strings.Join(a.cluster.Brokers(), ","),
		"b.bootstrap.servers": strings.Join(b.cluster.Brokers(), ","),
		// Connect commits MirrorMaker's source offsets this often: a crash copies again
		// what it copied since the last commit.
		"offset.flush.interval.ms":            "1000",
		"refresh.topics.interval.seconds":     "2",
		"sync.topic.configs.interval.seconds": "2",
		// Topics of connectors this file turns off, in case a version makes them anyway.
		"checkpoints.topic.replication.factor": "1",
		"heartbeats.topic.replication.factor":  "1",
	}
	var out []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		k, _, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		switch {
		case !ok || strings.HasPrefix(strings.TrimSpace(line), "#"):
			out = append(out, line)
		case strings.HasSuffix(k, "replication.factor"):
			out = append(out, k+" = 1")
		case over[k] != "":
			out = append(out, k+" = "+over[k])
			seen[k] = true
		default:
			out = append(out, line)
		}
	}
	for k, v := range over {
		if !seen[k] {
			out = append(out, k+" = "+v)
		}
	}
	return strings.Join(out, "\n") + "\n"
}

// waitCopied waits until b's topic holds at least as many offsets as a's: the mirror has
// copied everything (nothing was compacted yet).
func waitCopied(t *testing.T, a, b *region, topic string) {
	t.Helper()
	end := func(r *region) int64 {
		conn, err := kafka.Dial("tcp", r.cluster.Brokers()[0])
		if err != nil {
			return -1
		}
		defer conn.Close()
		parts, err := conn.ReadPartitions(topic)
		if err != nil {
			return -1
		}
		var sum int64
		for _, p := range parts {
			pc, err := kafka.DialLeader(context.Background(), "tcp", r.cluster.Brokers()[0], topic, p.ID)
			if err != nil {
				return -1
			}
			last, err := pc.ReadLastOffset()
			_ = pc.Close()
			if err != nil {
				return -1
			}
			sum += last
		}
		return sum
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		if ea, eb := end(a), end(b); ea > 0 && eb >= ea {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the mirror did not copy %s from %s to %s", topic, a.name, b.name)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// twoRegions starts region A (its registry writable) and region B (its registry
// following the mirrored _schemas), and creates A's throttle topic with spec.
func twoRegions(t *testing.T, spec throttle.TopicSpec) (a, b *region) {
	t.Helper()
	a = startRegion(t, "a", false)
	b = startRegion(t, "b", true)
	if _, err := throttle.EnsureTopic(t.Context(), a.kc, spec); err != nil {
		t.Fatal(err)
	}
	return a, b
}

// startMirror runs MirrorMaker 2 from a to b with the shipped mm2.properties, and shows
// the end of its log when the test fails.
func startMirror(t *testing.T, a, b *region) *kafkacluster.MirrorMaker {
	t.Helper()
	mm, err := kafkacluster.StartMirrorMaker(kafkacluster.MirrorConfig{Properties: mirrorProperties(t, a, b)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if log, err := os.ReadFile(mm.LogFile()); err == nil {
				t.Logf("mirrormaker log (tail):\n%s", tail(string(log), 4000))
			}
		}
		_ = mm.Close()
	})
	return mm
}

// waitTopic waits until the topic exists on r with partitions partitions.
func waitTopic(t *testing.T, r *region, topic string, partitions int) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		conn, err := kafka.Dial("tcp", r.cluster.Brokers()[0])
		if err == nil {
			parts, err := conn.ReadPartitions(topic)
			_ = conn.Close()
			if err == nil && len(parts) == partitions {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("region %s: topic %s with %d partitions never appeared", r.name, topic, partitions)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// replica is a running table of one region, with what its observer saw.
type replica struct {
	table *throttle.Table
	mu    sync.Mutex
	setAt map[string]time.Time // throttle id -> when this table first applied it
	dups  int                  // records applied again: a set of a seen id, a lift of nothing
}

func startReplica(t *testing.T, r *region, codec *throttle.Codec) *replica {
	t.Helper()
	rp := &replica{setAt: map[string]time.Time{}}
	tb, err := throttle.NewTable(r.kc, mirrorTopic, codec, throttle.WithObserver(func(c throttle.Change) {
		rp.mu.Lock()
		defer rp.mu.Unlock()
		switch {
		case c.Kind == throttle.ChangeSet:
			if _, ok := rp.setAt[c.Record.ID]; ok {
				rp.dups++
			} else {
				rp.setAt[c.Record.ID] = time.Now()
			}
		case c.Kind == throttle.ChangeLifted && c.Record.ID == "":
			rp.dups++
		}
	}), throttle.WithRead(follow.WithPollInterval(50*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	rp.table = tb
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = tb.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return rp
}

func (rp *replica) appliedAt(id string) (time.Time, bool) {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	at, ok := rp.setAt[id]
	return at, ok
}

// model is what region A acknowledged: each customer's active throttle.
type model struct {
	mu     sync.Mutex
	active map[string]throttle.Record
	acked  map[string]time.Time // throttle id -> when A acknowledged it
	last   map[string]lastOp    // customer -> the last write acknowledged for it
}

// lastOp is a customer's last acknowledged write: a throttle set, or the lift of one.
type lastOp struct {
	set, lifted string // the throttle id set, or lifted
	at          time.Time
}

func newModel() *model {
	return &model{active: map[string]throttle.Record{}, acked: map[string]time.Time{}, last: map[string]lastOp{}}
}

func (m *model) equal(tb *throttle.Table) (bool, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	want := map[string]string{}
	for c, r := range m.active {
		if r.ExpiresAt.After(now.Add(time.Second)) { // leave out what is about to expire
			want[c] = r.ID
		}
	}
	got := map[string]string{}
	for _, r := range tb.Active() {
		if r.ExpiresAt.After(now.Add(time.Second)) {
			got[r.Customer] = r.ID
		}
	}
	for c, id := range want {
		if got[c] != id {
			return false, fmt.Sprintf("customer %s: table has %q, A acknowledged %q (%d vs %d throttles)", c, got[c], id, len(got), len(want))
		}
	}
	for c, id := range got {
		if want[c] != id {
			return false, fmt.Sprintf("customer %s: table has %q, which A no longer holds", c, id)
		}
	}
	return true, ""
}

// churn sets, renews, lifts and expires throttles in region A until ctx ends. Expired
// throttles get their expiry tombstone, as processing's sweeper writes it. Each write
// runs to its end even when ctx ends meanwhile, so that the model holds every write A
// acknowledged and nothing else.
func churn(ctx context.Context, t *testing.T, pub *throttle.Publisher, m *model, customers int, every time.Duration) {
	churnUntil(ctx, t, pub, m, customers, every, false)
}

// churnUntil is churn; with tolerant, a write that fails (its region was lost) is not
// acknowledged and not recorded, and the churn goes on until ctx ends.
func churnUntil(ctx context.Context, t *testing.T, pub *throttle.Publisher, m *model, customers int, every time.Duration, tolerant bool) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	var n atomic.Int64
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		timeout := 30 * time.Second
		if tolerant {
			timeout = 2 * time.Second
		}
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		err := churnOnce(wctx, pub, m, rng, fmt.Sprintf("mirror-customer-%03d", rng.IntN(customers)), &n)
		cancel()
		if err != nil && !tolerant {
			t.Error(err)
			return
		}
	}
}

func churnOnce(ctx context.Context, pub *throttle.Publisher, m *model, rng *rand.Rand, c string, n *atomic.Int64) error {
	now := time.Now().UTC().Truncate(time.Millisecond)
	m.mu.Lock()
	cur, held := m.active[c]
	m.mu.Unlock()
	switch op := rng.IntN(10); {
	case held && !cur.ExpiresAt.After(now):
		if err := pub.Expire(ctx, cur); err != nil {
			return fmt.Errorf("expire %s: %w", c, err)
		}
		m.mu.Lock()
		delete(m.active, c)
		m.last[c] = lastOp{lifted: cur.ID, at: time.Now()}
		m.mu.Unlock()
	case held && op < 2:
		if err := pub.Lift(ctx, c); err != nil {
			return fmt.Errorf("lift %s: %w", c, err)
		}
		m.mu.Lock()
		delete(m.active, c)
		m.last[c] = lastOp{lifted: cur.ID, at: time.Now()}
		m.mu.Unlock()
	default: // set or renew; a few expire within seconds
		ttl := 10 * time.Minute
		if op == 9 {
			ttl = 2 * time.Second
		}
		r := throttle.Record{ID: fmt.Sprintf("m-%d-%d", now.UnixNano(), n.Add(1)), Customer: c, Limit: int64(1 + rng.IntN(100)),
			Window: time.Minute, CreatedAt: now, ExpiresAt: now.Add(ttl), Reason: throttle.Reason{Kind: throttle.ReasonManual, Note: "two regions"}, SetBy: "region-a"}
		if err := pub.Set(ctx, r); err != nil {
			return fmt.Errorf("set %s: %w", c, err)
		}
		m.mu.Lock()
		m.active[c] = r
		m.acked[r.ID] = time.Now()
		m.last[c] = lastOp{set: r.ID, at: time.Now()}
		m.mu.Unlock()
	}
	return nil
}

func eventuallyEqual(t *testing.T, what string, m *model, tb *throttle.Table, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var why string
	for time.Since(start) < within {
		var ok bool
		if ok, why = m.equal(tb); ok && tb.Ready() {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not equal to what A acknowledged after %s: %s", what, within, why)
	return 0
}

func percentiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	slices.Sort(ds)
	q := func(p float64) time.Duration { return ds[min(len(ds)-1, int(p*float64(len(ds))))] }
	return fmt.Sprintf("p50 %s, p99 %s, max %s (%d)", q(0.5).Round(time.Millisecond), q(0.99).Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond), len(ds))
}

// TestMirrorSecondRegion: throttles set, renewed, lifted and expired in region A are
// enforced and lifted in region B through MirrorMaker 2; a MirrorMaker killed with
// SIGKILL during churn and started again leaves B equal to A (duplicates counted, none
// harmful); and a replica of B rebuilt from offset zero, after B's cleaner has run over
// MirrorMaker's batches, equals a live one.
func TestMirrorSecondRegion(t *testing.T) {
	throttletest.RequireReal(t, "MirrorMaker 2 between two real clusters")
	ctx := t.Context()
	spec := throttle.TopicSpec{Name: mirrorTopic, Partitions: 3, ReplicationFactor: 1, MinInsyncReplicas: 1,
		SegmentMs: time.Second, MinCompactionLag: time.Millisecond, DeleteRetention: time.Hour}
	a, b := twoRegions(t, spec)
	codecA := a.codec(t)
	if _, err := codecA.Register(); err != nil {
		t.Fatal(err)
	}
	mm := startMirror(t, a, b)
	waitTopic(t, b, mirrorTopic, spec.Partitions)

	pub, err := throttle.NewPublisher(a.kc, mirrorTopic, codecA)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	liveA := startReplica(t, a, codecA)
	liveB := startReplica(t, b, b.codec(t))
	arrived := readArrivals(t, b, spec.Partitions)
	m := newModel()

	// MirrorMaker has started copying once a first throttle reaches B.
	warm := throttle.Record{ID: "warm-up", Customer: "warm-up", Limit: 1, Window: time.Minute, CreatedAt: time.Now().UTC().Truncate(time.Millisecond),
		ExpiresAt: time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond), SetBy: "region-a"}
	if err := pub.Set(ctx, warm); err != nil {
		t.Fatal(err)
	}
	m.active[warm.Customer] = warm
	warmed := time.Now()
	eventuallyEqual(t, "B after the first throttle", m, liveB.table, 2*time.Minute)
	t.Logf("MirrorMaker copied the first throttle %s after it was set (its start)", time.Since(warmed).Round(time.Millisecond))

	// Phase 1: churn, and how long A's acknowledgement takes to be enforced in B.
	cctx, stop := context.WithTimeout(ctx, 15*time.Second)
	churn(cctx, t, pub, m, 40, 40*time.Millisecond)
	stop()
	took := eventuallyEqual(t, "B after churn", m, liveB.table, time.Minute)
	eventuallyEqual(t, "A after churn", m, liveA.table, 10*time.Second)
	var enforce, copyLat []time.Duration
	m.mu.Lock()
	for id, acked := range m.acked {
		if at, ok := liveB.appliedAt(id); ok {
			enforce = append(enforce, at.Sub(acked))
		}
		if at, ok := arrived.at(id); ok {
			copyLat = append(copyLat, at.Sub(acked))
		}
	}
	sets := len(m.acked)
	m.mu.Unlock()
	t.Logf("phase 1: %d throttles set in A; B equal to A %s after the churn stopped", sets, took.Round(time.Millisecond))
	t.Logf("A acknowledged -> enforced in B: %s", percentiles(enforce))
	t.Logf("A acknowledged -> readable in B's log (MirrorMaker's copy, seen by plain kafka-go readers of B): %s", percentiles(copyLat))

	// Phase 2: MirrorMaker killed during churn, started again.
	cctx, stop = context.WithTimeout(ctx, 12*time.Second)
	var wg sync.WaitGroup
	wg.Go(func() { churn(cctx, t, pub, m, 40, 40*time.Millisecond) })
	time.Sleep(4 * time.Second)
	mm.Kill()
	killed := time.Now()
	time.Sleep(3 * time.Second)
	if err := mm.Start(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	stop()
	took = eventuallyEqual(t, "B after MirrorMaker's kill", m, liveB.table, 2*time.Minute)
	liveB.mu.Lock()
	dups := liveB.dups
	liveB.mu.Unlock()
	t.Logf("phase 2: MirrorMaker killed (SIGKILL) and started 3s later; B equal to A %s after the churn stopped (%s after the kill); %d records applied again in B (copied twice), 0 lost",
		took.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond), dups)

	// Phase 3: B's cleaner runs over MirrorMaker's batches; a replica rebuilt from zero
	// equals the live one.
	time.Sleep(4 * time.Second) // segments roll (segment.ms 1s) and the cleaner (300ms backoff) runs
	rebuilt := startReplica(t, b, b.codec(t))
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := rebuilt.table.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	if ok, why := m.equal(rebuilt.table); !ok {
		t.Fatalf("replica of B rebuilt after compaction: %s", why)
	}
	live, fresh := liveB.table.Active(), rebuilt.table.Active()
	if !slices.EqualFunc(live, fresh, func(x, y throttle.Record) bool { return x.Customer == y.Customer && x.ID == y.ID }) {
		t.Fatalf("rebuilt replica holds %d throttles, live one %d: they differ", len(fresh), len(live))
	}
	st := rebuilt.table.Stats()
	var poison int64
	for _, n := range st.Poison {
		poison += n
	}
	if poison != 0 || st.SchemaMissing != 0 {
		t.Fatalf("rebuilt replica: poison %v, schema missing %d", st.Poison, st.SchemaMissing)
	}
	t.Logf("phase 3: replica rebuilt from B's log read %d records (the live one applied %d) and holds the same %d throttles",
		st.Applied, liveB.table.Stats().Applied, len(fresh))
}

// arrivals records when each throttle id became readable in a region's log, read by
// plain kafka-go readers (one per partition, from the start): MirrorMaker's copy
// latency, without the table.
type arrivals struct {
	mu sync.Mutex
	by map[string]time.Time
}

func (a *arrivals) at(id string) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	at, ok := a.by[id]
	return at, ok
}

func readArrivals(t *testing.T, r *region, partitions int) *arrivals {
	t.Helper()
	codec := r.codec(t)
	a := &arrivals{by: map[string]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for p := range partitions {
		rd := kafka.NewReader(kafka.ReaderConfig{Brokers: r.cluster.Brokers(), Topic: mirrorTopic, Partition: p, MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 20 * time.Millisecond})
		wg.Go(func() {
			defer rd.Close()
			for {
				msg, err := rd.ReadMessage(ctx)
				if err != nil {
					return
				}
				now := time.Now()
				if msg.Value == nil {
					continue
				}
				if rec, err := codec.Decode(msg.Value); err == nil {
					a.mu.Lock()
					if _, ok := a.by[rec.ID]; !ok {
						a.by[rec.ID] = now
					}
					a.mu.Unlock()
				}
			}
		})
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	return a
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// TestMirrorRegistryWithoutTheSourceIDs: a region-B replica whose registry does not
// know region A's schema ids (it does not follow the mirrored _schemas) enforces
// nothing and says so: it stays unready, holding each partition at its first record
// and counting the attempts, and skips nothing. Pointed at a registry that follows the
// mirrored _schemas, the same replica catches up and equals A.
func TestMirrorRegistryWithoutTheSourceIDs(t *testing.T) {
	throttletest.RequireReal(t, "MirrorMaker 2 between two real clusters")
	ctx := t.Context()
	a, b := twoRegions(t, throttle.TopicSpec{Name: mirrorTopic, Partitions: 3, ReplicationFactor: 1, MinInsyncReplicas: 1})
	codecA := a.codec(t)
	// A registry of B's own that never saw A's schemas: the ids A's records carry mean
	// nothing there.
	lonely, err := registry.New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lonely.Close()
	// One URL for B's replica, whose registry the test swaps.
	var handler atomic.Pointer[http.Handler]
	h := lonely.Handler()
	handler.Store(&h)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*handler.Load()).ServeHTTP(w, r) }))
	defer srv.Close()

	pub, err := throttle.NewPublisher(a.kc, mirrorTopic, codecA)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	m := newModel()
	cctx, stop := context.WithTimeout(ctx, 2*time.Second)
	churn(cctx, t, pub, m, 20, 20*time.Millisecond)
	stop()

	startMirror(t, a, b)
	waitTopic(t, b, mirrorTopic, 3)
	waitCopied(t, a, b, mirrorTopic)
	codecB, err := throttle.NewCodec(throttle.RegistryConfig{URL: srv.URL, Timeout: 2 * time.Second}, mirrorTopic)
	if err != nil {
		t.Fatal(err)
	}
	rb := startReplica(t, b, codecB)
	deadline := time.Now().Add(time.Minute)
	for rb.table.Stats().SchemaMissing < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("replica never met an unknown schema id: %+v", rb.table.Stats())
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // it keeps holding
	st := rb.table.Stats()
	held := 0
	for _, p := range st.Partitions {
		if p.Waiting >= 0 {
			held++
		}
	}
	var poison int64
	for _, n := range st.Poison {
		poison += n
	}
	if rb.table.Ready() || held == 0 || poison != 0 || len(rb.table.Active()) != 0 {
		t.Fatalf("with a registry lacking A's ids: ready %v, %d partitions held, poison %v, %d throttles: want unready, held, nothing skipped",
			rb.table.Ready(), held, st.Poison, len(rb.table.Active()))
	}
	t.Logf("registry without A's ids: replica unready, %d of %d partitions held, %d attempts counted, 0 skipped", held, len(st.Partitions), st.SchemaMissing)

	// B's registry as it should run: following the mirrored _schemas.
	h = b.reg.Handler()
	handler.Store(&h)
	took := eventuallyEqual(t, "B with the following registry", m, rb.table, time.Minute)
	t.Logf("registry following the mirrored _schemas: replica ready and equal to A %s after the switch", took.Round(time.Millisecond))
}

// TestMirrorFailoverAndFailback: region A dies while throttles churn. Of what A
// acknowledged, everything MirrorMaker had copied is enforced in B, and what it had not
// is counted. The operator's failover (deploy/OPERATIONS.md): B's registry becomes
// writable and B's processing publishes (sets, lifts, sweeps expiries). A comes back
// with its stale topic; failback is dump B, restore --exact into A, B's registry
// read-only again, MirrorMaker A->B again. Afterwards both regions hold exactly B's
// throttles, nothing lifted comes back, and a throttle set in A reaches B again.
func TestMirrorFailoverAndFailback(t *testing.T) {
	throttletest.RequireReal(t, "MirrorMaker 2 between two real clusters")
	ctx := t.Context()
	a, b := twoRegions(t, throttle.TopicSpec{Name: mirrorTopic, Partitions: 3, ReplicationFactor: 1, MinInsyncReplicas: 1})
	codecA := a.codec(t)
	mm := startMirror(t, a, b)
	waitTopic(t, b, mirrorTopic, 3)
	pubA, err := throttle.NewPublisher(a.kc, mirrorTopic, codecA)
	if err != nil {
		t.Fatal(err)
	}
	defer pubA.Close()
	liveB := startReplica(t, b, b.codec(t))
	// A's processing writes mirror heartbeats; B's ingestion reports their age.
	const heartbeats = "sluice.mirror.heartbeat"
	if _, err := cluster.CreateTopics(ctx, a.kc, mirror.TopicConfig(heartbeats, 1, 1)); err != nil {
		t.Fatal(err)
	}
	hw, err := cluster.NewWriter(a.kc, heartbeats)
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.CloseWriter(hw)
	beatCtx, stopBeats := context.WithCancel(ctx)
	defer stopBeats()
	go mirror.Beat(beatCtx, hw, "a", time.Second, zap.NewNop())
	ages := mirror.NewAges(zap.NewNop())
	hb, err := follow.New(b.kc, heartbeats, ages.Apply)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = hb.Run(beatCtx) }()
	m := newModel()
	cctx, stop := context.WithTimeout(ctx, 3*time.Second)
	churn(cctx, t, pubA, m, 30, 20*time.Millisecond)
	stop()
	eventuallyEqual(t, "B before the loss", m, liveB.table, 2*time.Minute)
	for deadline := time.Now().Add(time.Minute); ages.Age(time.Now())["a"] == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no mirror heartbeat of region a reached B")
		}
	}

	// Region A is lost in the middle of the churn, just after MirrorMaker.
	cctx, stop = context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { churnUntil(cctx, t, pubA, m, 30, 5*time.Millisecond, true) })
	time.Sleep(2 * time.Second)
	// The mirror falls behind first (MirrorMaker dies a second before the cluster), so
	// that A acknowledges writes that never reach B.
	mm.Kill()
	time.Sleep(time.Second)
	lagAtLoss := ages.Age(time.Now())["a"]
	a.cluster.Kill(1)
	lost := time.Now()
	time.Sleep(time.Second)
	stop()
	wg.Wait()
	time.Sleep(2 * time.Second) // B applies what reached it

	bActive := map[string]throttle.Record{}
	for _, r := range liveB.table.Active() {
		bActive[r.Customer] = r
	}
	copied, notCopied, lostN := 0, 0, 0
	var oldestMissing time.Time
	now := time.Now()
	m.mu.Lock()
	for c, op := range m.last {
		cur, ok := bActive[c]
		if op.set != "" && !m.active[c].ExpiresAt.After(now.Add(time.Second)) {
			continue // expired meanwhile: no state to compare
		}
		// B holds the write when it holds the throttle set, or no longer the one lifted.
		if (op.set != "" && ok && cur.ID == op.set) || (op.lifted != "" && (!ok || cur.ID != op.lifted)) {
			copied++
			continue
		}
		if _, seen := liveB.appliedAt(op.set); op.set != "" && seen {
			lostN++
			t.Errorf("customer %s: A acknowledged %s, B applied it, and B now holds %q", c, op.set, cur.ID)
			continue
		}
		notCopied++
		if oldestMissing.IsZero() || op.at.Before(oldestMissing) {
			oldestMissing = op.at
		}
	}
	acked := len(m.acked)
	m.mu.Unlock()
	lag := "every acknowledged write had been copied"
	if !oldestMissing.IsZero() {
		lag = fmt.Sprintf("the oldest write not copied was acknowledged %s before the loss", lost.Sub(oldestMissing).Round(time.Millisecond))
	}
	if notCopied == 0 {
		t.Errorf("no acknowledged write went uncopied, though MirrorMaker died a second before A: the count is not tested")
	}
	t.Logf("region A lost during churn (%d throttles acknowledged in all): of the customers' last acknowledged writes, %d copied and enforced in B, %d not copied, %d lost; %s; the mirror's lag at the loss (sluice_ingestion_mirror_heartbeat_age_seconds in B) was %s",
		acked, copied, notCopied, lostN, lag, lagAtLoss.Round(time.Millisecond))

	// Failover: B's registry takes writes, B's processing publishes and sweeps.
	failover := time.Now()
	b.serveRegistry(t, false)
	codecB := b.codec(t)
	pubB, err := throttle.NewPublisher(b.kc, mirrorTopic, codecB)
	if err != nil {
		t.Fatal(err)
	}
	var sweeper atomic.Pointer[expiry.Sweeper]
	procB, err := throttle.NewTable(b.kc, mirrorTopic, codecB, throttle.WithObserver(func(c throttle.Change) {
		if s := sweeper.Load(); s != nil {
			s.Observe(c)
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	sw, err := expiry.New(pubB, procB, expiry.WithGrace(0), expiry.WithInterval(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	sweeper.Store(sw)
	pctx, stopProc := context.WithCancel(ctx)
	var procWG sync.WaitGroup
	procWG.Go(func() { _ = procB.Run(pctx) })
	if err := procB.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	procWG.Go(func() { _ = sw.Run(pctx) })
	// B's model from here on is what B holds.
	mb := newModel()
	for c, r := range bActive {
		mb.active[c] = r
	}
	t.Logf("failover: B's registry writable and B publishing %s after the loss was noticed", time.Since(failover).Round(time.Millisecond))
	cctx, stop = context.WithTimeout(ctx, 4*time.Second)
	churn(cctx, t, pubB, mb, 30, 20*time.Millisecond)
	stop()
	// A throttle that expires in B with nobody lifting it: B's sweeper tombstones it.
	now = time.Now().UTC().Truncate(time.Millisecond)
	swept := throttle.Record{ID: "swept-in-b", Customer: "swept-in-b", Limit: 1, Window: time.Minute, CreatedAt: now, ExpiresAt: now.Add(time.Second), SetBy: "region-b"}
	if err := pubB.Set(ctx, swept); err != nil {
		t.Fatal(err)
	}
	eventuallyEqual(t, "B after failover", mb, liveB.table, time.Minute)
	waitTombstone(t, b, codecB, swept.ID)
	t.Logf("after failover B set, lifted and expired %d throttles; its sweeper tombstoned the expired one", len(mb.acked))

	// Failback: A returns with its stale topic.
	if err := a.cluster.Start(ctx, 1); err != nil {
		t.Fatal(err)
	}
	stopProc()
	procWG.Wait()
	_ = pubB.Close()
	stale := startReplica(t, a, codecA)
	if err := stale.table.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, _ := mb.equal(stale.table); ok {
		t.Fatal("A came back equal to B: the test lost nothing to fail back")
	}
	file := t.TempDir() + "/b.jsonl"
	r := invoke(t, ctx, "", "dump", "--brokers", strings.Join(b.cluster.Brokers(), ","), "--registry", b.url)
	if r.code != exitOK {
		t.Fatalf("dump B: exit %d: %s", r.code, r.stderr)
	}
	writeFile(t, file, r.stdout)
	r = invoke(t, ctx, "", "restore", file, "--exact", "--brokers", strings.Join(a.cluster.Brokers(), ","), "--registry", a.url)
	if r.code != exitOK {
		t.Fatalf("restore --exact into A: exit %d: %s", r.code, r.stderr)
	}
	t.Logf("failback: throttlectl restore --exact into A: %s", strings.TrimSpace(lastLine(r.stdout)))
	b.serveRegistry(t, true)
	if err := mm.Start(); err != nil {
		t.Fatal(err)
	}
	// A publishes again, and B enforces what A sets.
	now = time.Now().UTC().Truncate(time.Millisecond)
	after := throttle.Record{ID: "after-failback", Customer: "after-failback", Limit: 7, Window: time.Minute, CreatedAt: now, ExpiresAt: now.Add(time.Hour), SetBy: "region-a"}
	if err := pubA.Set(ctx, after); err != nil {
		t.Fatal(err)
	}
	mb.mu.Lock()
	mb.active[after.Customer] = after
	mb.mu.Unlock()
	tookA := eventuallyEqual(t, "A after failback", mb, stale.table, time.Minute)
	tookB := eventuallyEqual(t, "B after failback", mb, liveB.table, 2*time.Minute)
	rebuiltA := startReplica(t, a, codecA)
	eventuallyEqual(t, "a replica of A rebuilt after failback", mb, rebuiltA.table, time.Minute)
	t.Logf("after failback: A equal to B's state %s after the restore, B (MirrorMaker resumed) %s; a throttle set in A enforced in B; %d throttles in both",
		tookA.Round(time.Millisecond), tookB.Round(time.Millisecond), len(liveB.table.Active()))
}

// waitTombstone waits for an expiry tombstone naming id on r's topic.
func waitTombstone(t *testing.T, r *region, codec *throttle.Codec, id string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		found := false
		_, err := scanTopic(t.Context(), r.kc, mirrorTopic, codec, func(e entry) error {
			if e.Tombstone && header(e.Headers, throttle.HeaderExpires) == id {
				found = true
			}
			return nil
		})
		if err == nil && found {
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("no expiry tombstone for %s on %s's topic", id, r.name)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
