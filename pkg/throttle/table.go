package throttle

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/pkg/throttle/follow"
)

// HeaderExpires is the header an expiry tombstone carries: the id of the throttle it
// expires. A tombstone whose header names another id than the customer's current
// throttle is stale (it was decided before a renewal landed) and does not delete it.
// Tombstones without the header (an operator's lift) always delete.
const HeaderExpires = "sluice-expires-id"

// headerExpiresCreated is the creation time (Unix milliseconds) of the throttle an expiry
// tombstone expires. A table that holds an older throttle than that one missed the
// expired throttle (compaction removed it before this reader got to it): the key's newest
// state is the tombstone, so it deletes, as a table rebuilt from zero would hold nothing.
const headerExpiresCreated = "sluice-expires-created"

// ChangeKind says what happened to a customer's throttle.
type ChangeKind uint8

const (
	// ChangeSet: a throttle was set or replaced.
	ChangeSet ChangeKind = iota + 1
	// ChangeLifted: a tombstone removed the throttle.
	ChangeLifted
	// ChangeExpired: the throttle passed its expiry and the table forgot it.
	ChangeExpired
	// ChangeStaleTombstone: an expiry tombstone named an older throttle than the
	// customer's current one and was ignored. The log now has that tombstone after the
	// current throttle, so compaction would drop the throttle: its publisher must write
	// it again (Sweeper does).
	ChangeStaleTombstone
	// ChangePoisoned: a poison record (one the table skips) was written under the key of
	// a throttle the table holds. The table keeps the throttle, but the poison record is
	// now the key's newest and compaction would keep it alone: the throttle's publisher
	// must write it again (Sweeper does). Record is the throttle kept.
	ChangePoisoned
	// ChangeMoved: partitions were added to the topic and the customer's key now belongs
	// to another partition, so its throttle, on the old one, no longer counts (see
	// Table.apply for the rule). Record is the throttle dropped: its publisher must write
	// it again, which lands it on the key's new partition (Sweeper does).
	ChangeMoved
)

// String is the kind as logs and metrics label it.
func (k ChangeKind) String() string {
	switch k {
	case ChangeSet:
		return "set"
	case ChangeLifted:
		return "lifted"
	case ChangeExpired:
		return "expired"
	case ChangeStaleTombstone:
		return "stale_tombstone"
	case ChangePoisoned:
		return "poisoned"
	case ChangeMoved:
		return "moved"
	}
	return "unknown"
}

// Change is one change of the table, handed to the observer.
type Change struct {
	Kind     ChangeKind
	Customer string
	// Record is the throttle set (ChangeSet), removed (ChangeLifted, ChangeExpired), or
	// kept (ChangeStaleTombstone). For a lift of a customer the table did not hold, it
	// is the zero Record.
	Record Record
	// Age is now minus the Kafka record's timestamp: the propagation delay from the
	// publisher to this table. Zero for ChangeExpired.
	Age       time.Duration
	Partition int
	Offset    int64 // -1 for ChangeExpired
	// Rebuilding is true for records read before the table was first ready.
	Rebuilding bool
}

// Option configures a Table or a Publisher. Each constructor refuses an option meant for
// the other.
type Option interface{ apply(*options) }

// option is every Option: what it sets, and which constructors take it.
type option struct {
	name             string
	table, publisher bool
	set              func(*options)
}

func (o option) apply(c *options) { o.set(c) }

func tableOption(name string, set func(*options)) Option {
	return option{name: name, table: true, set: set}
}

func publisherOption(name string, set func(*options)) Option {
	return option{name: name, publisher: true, set: set}
}

type options struct {
	tableConfig
	publisherConfig
	log  *zap.Logger
	read []follow.Opt
}

type tableConfig struct {
	observer    func(Change)
	clock       func() time.Time
	forgetEvery time.Duration
}

// buildOptions applies opts over the defaults; forTable says which constructor asks.
func buildOptions(opts []Option, forTable bool) (options, error) {
	o := options{
		tableConfig:     tableConfig{clock: time.Now, forgetEvery: time.Second},
		publisherConfig: publisherConfig{maxAttempts: 5, backoffMin: 50 * time.Millisecond, backoffMax: time.Second, batchTimeout: 2 * time.Millisecond, writeTimeout: 10 * time.Second},
		log:             zap.NewNop(),
	}
	for _, opt := range opts {
		op, ok := opt.(option)
		switch {
		case !ok:
			return o, errors.New("nil option")
		case forTable && !op.table:
			return o, fmt.Errorf("%s applies to a Publisher, not a Table", op.name)
		case !forTable && !op.publisher:
			return o, fmt.Errorf("%s applies to a Table, not a Publisher", op.name)
		}
		op.set(&o)
	}
	return o, nil
}

// WithLogger sets the logger of the table and of its read loop (default: none).
func WithLogger(l *zap.Logger) Option {
	return tableOption("WithLogger", func(o *options) {
		if l != nil {
			o.log = l
		}
	})
}

// WithRead tunes the table's read loop (follow.WithPollInterval, WithStallTimeout,
// WithBackoff, WithPartitionDiscovery).
func WithRead(opts ...follow.Opt) Option {
	return tableOption("WithRead", func(o *options) { o.read = append(o.read, opts...) })
}

// WithObserver registers a function called for every change, on the goroutine that
// applied it. It must be quick and must not call back into the table's writers.
func WithObserver(fn func(Change)) Option {
	return tableOption("WithObserver", func(o *options) { o.observer = fn })
}

// withClock replaces time.Now, for tests.
func withClock(now func() time.Time) Option {
	return tableOption("withClock", func(o *options) {
		if now != nil {
			o.clock = now
		}
	})
}

// withForgetInterval sets how often expired throttles are forgotten (default 1s). Lookups
// treat a throttle as absent from its expiry on regardless.
func withForgetInterval(d time.Duration) Option {
	return tableOption("withForgetInterval", func(o *options) { o.forgetEvery = d })
}

const shardCount = 256

// clockTick is how often the table's coarse clock advances, and so the precision with
// which Lookup observes expiry.
const clockTick = 5 * time.Millisecond

// Table is a local copy of the throttle topic: the latest active throttle per customer.
// It rebuilds itself by reading every partition from offset zero, is ready once it has
// reached the end offsets the partitions had at start, and then follows new records.
//
// Lookup is lock-free and allocation-free: each of 256 shards makes visible an immutable
// map through an atomic pointer. Before the table is ready, writers fill their maps in
// place and Lookup sees nothing; at ready those maps are handed to readers as they are,
// and from then on a write copies its one shard (throttles change rarely; lookups happen
// on every event).
type Table struct {
	topic    string
	codec    *Codec
	cfg      tableConfig
	log      *zap.Logger
	follower *follow.Follower
	seed     maphash.Seed
	shards   [shardCount]shard

	filter    atomic.Pointer[filter]
	filterMu  sync.Mutex   // writers: set() adds, forgetExpired() swaps in a rebuilt filter
	filterAdd atomic.Int64 // adds since the last rebuild

	// now is a coarse clock (unix milliseconds, as Rule keeps expiries) that Run
	// refreshes every clockTick: reading the system clock costs more than the rest of a
	// Lookup.
	now atomic.Int64

	poison    [len(poisonReasons)]atomic.Int64
	retries   atomic.Int64 // records retried because the registry was unavailable
	missing   atomic.Int64 // records retried because the registry does not know their schema id
	applied   atomic.Int64
	forgetRun sync.Mutex // one forgetExpired at a time

	internMu sync.Mutex
	interned map[string]string

	// partsMu orders records against a change of the partition count: apply holds it
	// for reading, repartition for writing, so no record is judged by a stale count.
	partsMu sync.RWMutex
	parts   []int // 0..n-1: the topic's partitions, for the Murmur2 partitioner
}

var poisonReasons = [...]string{"bad_magic", "truncated", "unknown_schema", "bad_body", "invalid", "key_mismatch", "wrong_partition", "no_key"}

// rules maps a customer to the rule of its throttle.
type rules = map[string]Rule

// A shard holds the throttles of the customers whose hash ends in its index.
type shard struct {
	mu       sync.Mutex            // writers only
	building rules                 // before ready: written in place, not visible
	visible  atomic.Pointer[rules] // after ready: immutable, copied on write
}

// current is the shard's map as its writers see it: the building one until the table is
// ready, the visible one after. The caller holds mu.
func (s *shard) current() rules {
	if s.building != nil {
		return s.building
	}
	return *s.visible.Load()
}

// update applies change to the shard's map: in place while building, else to a copy
// that then replaces the visible one. The caller holds mu.
func (s *shard) update(change func(rules)) {
	if s.building != nil {
		change(s.building)
		return
	}
	next := maps.Clone(*s.visible.Load())
	change(next)
	s.visible.Store(&next)
}

// shardOf returns the customer's shard: the low byte of its hash picks it (bits 8-27
// pick the filter's bit).
func (t *Table) shardOf(customer string) *shard {
	return &t.shards[maphash.String(t.seed, customer)%shardCount]
}

// NewTable returns a table of the throttle topic. Run starts it.
func NewTable(kc cluster.Config, topic string, codec *Codec, opts ...Option) (*Table, error) {
	if codec == nil {
		return nil, errors.New("new table: codec is nil")
	}
	o, err := buildOptions(opts, true)
	if err != nil {
		return nil, fmt.Errorf("new table: %w", err)
	}
	if o.forgetEvery <= 0 {
		return nil, errors.New("new table: forget interval must be positive")
	}
	t := &Table{topic: topic, codec: codec, cfg: o.tableConfig, log: o.log.With(zap.String("topic", topic)), seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].building = rules{}
	}
	t.now.Store(t.cfg.clock().UnixMilli())
	t.filter.Store(new(filter))
	read := append([]follow.Opt{follow.WithLogger(o.log)}, o.read...)
	read = append(read, follow.WithCaughtUp(t.makeVisible), follow.WithPartitionCount(t.repartition))
	f, err := follow.New(kc, topic, t.apply, read...)
	if err != nil {
		return nil, fmt.Errorf("new table: %w", err)
	}
	t.follower = f
	return t, nil
}

// Run reads the topic until ctx ends, then returns nil. Broker and registry failures
// are retried forever; meanwhile the table keeps serving what it knows.
func (t *Table) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(clockTick)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				t.now.Store(t.cfg.clock().UnixMilli())
			}
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(t.cfg.forgetEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				t.forgetExpired()
			}
		}
	}()
	return t.follower.Run(ctx)
}

// Ready reports whether the table has caught up with the topic.
func (t *Table) Ready() bool { return t.follower.Ready() }

// WaitReady blocks until the table is ready or ctx ends.
func (t *Table) WaitReady(ctx context.Context) error { return t.follower.WaitReady(ctx) }

// Lookup returns the rule of the customer's active throttle: what enforcing it needs. It
// is the hot path of every event: it never blocks and never allocates. It returns
// nothing until the table is ready. Expiry is observed within a few milliseconds (the
// table's coarse clock).
func (t *Table) Lookup(customer string) (Rule, bool) {
	h := maphash.String(t.seed, customer)
	// Most customers are not throttled: a small bitmap that stays in cache answers
	// most misses without touching the tables.
	if !t.filter.Load().has(h) {
		return Rule{}, false
	}
	m := t.shards[h%shardCount].visible.Load()
	if m == nil {
		return Rule{}, false
	}
	r, ok := (*m)[customer]
	if !ok || t.now.Load() >= r.expires {
		return Rule{}, false
	}
	return r, true
}

// Get returns the customer's active throttle as a full record, for views and for
// publishers that compare before they write. Lookup is the cheaper call for enforcing.
func (t *Table) Get(customer string) (Record, bool) {
	r, ok := t.Lookup(customer)
	if !ok {
		return Record{}, false
	}
	return r.Record(customer), true
}

// Active returns every active throttle, ordered by customer. Empty until ready.
func (t *Table) Active() []Record {
	now := t.cfg.clock()
	var out []Record
	for i := range t.shards {
		if m := t.shards[i].visible.Load(); m != nil {
			for c, r := range *m {
				if r.Active(now) {
					out = append(out, r.Record(c))
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Customer < out[j].Customer })
	return out
}

// TableStats describes the table for logs, metrics and status endpoints.
type TableStats struct {
	Topic string
	Ready bool
	// Fresh is false while the broker cannot be reached: the table then serves the
	// throttles it last knew.
	Fresh      bool
	Active     int
	Partitions []follow.Progress
	// Poison counts skipped records by reason: no_key (a null or empty key: no
	// customer), wrong_partition (see apply), bad_magic, truncated, unknown_schema,
	// bad_body, invalid, key_mismatch.
	Poison map[string]int64
	// RegistryRetries counts attempts to decode a record that failed because the
	// registry could not be reached (the record was retried, not skipped).
	RegistryRetries int64
	// SchemaMissing counts attempts to decode a record whose schema id the registry
	// says it does not know. Such a record holds its partition (Partitions[i].Waiting)
	// until the registry has the id: skipping it would drop a throttle.
	SchemaMissing int64
	Applied       int64
}

// Stats returns the table's current figures.
func (t *Table) Stats() TableStats {
	s := TableStats{
		Topic: t.topic, Ready: t.Ready(), Fresh: t.follower.Fresh(),
		Partitions: t.follower.Progress(), Poison: map[string]int64{},
		RegistryRetries: t.retries.Load(), SchemaMissing: t.missing.Load(), Applied: t.applied.Load(),
	}
	now := t.cfg.clock()
	for i := range t.shards {
		if m := t.shards[i].visible.Load(); m != nil {
			for _, r := range *m {
				if r.Active(now) {
					s.Active++
				}
			}
		}
	}
	for i, name := range poisonReasons {
		s.Poison[name] = t.poison[i].Load()
	}
	return s
}

// filterBits is the size of the table's membership bitmap: 128 KiB, one bit per hash.
const filterBits = 1 << 20

// filter is a one-hash Bloom filter over the customers that have (or had) a throttle.
// Bits are only ever set, so a lookup never misses a throttle; stale bits of removed
// throttles cost a table probe and are dropped when forgetExpired rebuilds the filter.
type filter [filterBits / 64]atomic.Uint64

func filterBit(h uint64) uint64 { return (h >> 8) % filterBits } // low bits pick the shard

func (f *filter) has(h uint64) bool {
	b := filterBit(h)
	return f[b/64].Load()&(1<<(b%64)) != 0
}

func (f *filter) add(h uint64) {
	b := filterBit(h)
	f[b/64].Or(1 << (b % 64))
}

// apply is the one path for every record, while rebuilding and while tailing: a record
// upserts, a tombstone deletes (unless it is a stale expiry tombstone), a poison record
// is counted and skipped, and a record whose schema cannot be fetched right now is
// retried by the Follower.
//
// A key counts on one partition only: the one the Murmur2 partitioner (the Publisher's,
// and every Java client's) gives it under the topic's current partition count. A record
// on another partition (a producer with another partitioner) is counted as poison
// (wrong_partition) and skipped, so a replica that followed live and one rebuilt from
// zero end with the same answer whatever order they read the partitions in.
func (t *Table) apply(_ context.Context, msg kafka.Message) error {
	now := t.cfg.clock()
	customer := string(msg.Key)
	ch := Change{Customer: customer, Age: now.Sub(msg.Time), Partition: msg.Partition, Offset: msg.Offset, Rebuilding: !t.Ready()}
	if len(msg.Key) == 0 {
		// No customer, and no partition of its own: a null key is spread by partitioners.
		t.skip(msg, "no_key", errors.New("a throttle record is keyed by its customer; this one has no key"), ch)
		return nil
	}
	t.partsMu.RLock()
	defer t.partsMu.RUnlock()
	if home := t.home(msg.Key); home != msg.Partition {
		t.skip(msg, "wrong_partition", fmt.Errorf("key belongs to partition %d of %d", home, len(t.parts)), ch)
		return nil
	}

	if msg.Value == nil { // a tombstone: never handed to the decoder
		expires := headerValue(msg, HeaderExpires)
		created, _ := strconv.ParseInt(headerValue(msg, headerExpiresCreated), 10, 64) // 0: unknown
		prev, kept := t.del(customer, expires, created)
		switch {
		case kept != nil:
			ch.Kind, ch.Record = ChangeStaleTombstone, *kept
		default:
			ch.Kind = ChangeLifted
			if prev != nil {
				ch.Record = *prev
			}
		}
		t.applied.Add(1)
		t.notify(ch)
		return nil
	}

	rec, err := t.codec.Decode(msg.Value)
	if err == nil && rec.Customer != customer {
		err = fmt.Errorf("record for customer %q under key %q", rec.Customer, customer)
		t.skip(msg, "key_mismatch", err, ch)
		return nil
	}
	if err != nil {
		if reason := PoisonReason(err); reason != "" {
			t.skip(msg, reason, err, ch)
			return nil
		}
		if errors.Is(err, errSchemaNotFound) {
			t.missing.Add(1)
		} else {
			t.retries.Add(1)
		}
		return fmt.Errorf("decode throttle at %s/%d@%d: %w", t.topic, msg.Partition, msg.Offset, err)
	}
	t.applied.Add(1)
	if !rec.Active(now) {
		// Already expired (a replay of history, or an expiry nobody tombstoned yet):
		// forget whatever the key held, which is older still, and report the record so
		// a sweeper can tombstone it.
		t.del(customer, "", 0)
		ch.Kind, ch.Record = ChangeExpired, rec
		t.notify(ch)
		return nil
	}
	// Share the few distinct instance and metric names between records instead of
	// keeping one copy per throttle.
	rec.SetBy, rec.Reason.Metric = t.intern(rec.SetBy), t.intern(rec.Reason.Metric)
	t.set(rec.Customer, rec) // rec.Customer == customer: key the map by the record's own copy
	ch.Kind, ch.Record = ChangeSet, rec
	t.notify(ch)
	return nil
}

// skip counts and logs a poison record, and reports it (ChangePoisoned) when it hides a
// throttle the table holds.
func (t *Table) skip(msg kafka.Message, reason string, err error, ch Change) {
	for i, name := range poisonReasons {
		if name == reason {
			t.poison[i].Add(1)
		}
	}
	t.log.Warn("skipping poison throttle record",
		zap.Int("partition", msg.Partition), zap.Int64("offset", msg.Offset),
		zap.ByteString("customer", msg.Key), zap.String("reason", reason), zap.Error(err))
	// A record on a partition the key does not belong to cannot hide the throttle.
	if cur, ok := t.held(ch.Customer); ok && reason != "wrong_partition" {
		ch.Kind, ch.Record = ChangePoisoned, cur
		t.notify(ch)
	}
}

// held returns the customer's active throttle as the table holds it, also while it is
// still rebuilding (when Get answers nothing).
func (t *Table) held(customer string) (Record, bool) {
	s := t.shardOf(customer)
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.current()[customer]
	if !ok || !r.Active(t.cfg.clock()) {
		return Record{}, false
	}
	return r.Record(customer), true
}

func (t *Table) notify(c Change) {
	if t.cfg.observer != nil {
		t.cfg.observer(c)
	}
}

func headerValue(msg kafka.Message, key string) string {
	for _, h := range msg.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// intern returns a shared copy of s, for the short list of strings many records repeat.
// It stops adding once the list is long: then the strings were not few after all.
func (t *Table) intern(s string) string {
	if s == "" {
		return ""
	}
	t.internMu.Lock()
	defer t.internMu.Unlock()
	if v, ok := t.interned[s]; ok {
		return v
	}
	if t.interned == nil {
		t.interned = map[string]string{}
	}
	if len(t.interned) < 1024 {
		t.interned[s] = s
	}
	return s
}

// set stores r as the customer's throttle.
func (t *Table) set(customer string, r Record) {
	h := maphash.String(t.seed, customer)
	s := &t.shards[h%shardCount]
	rule := r.Rule()
	s.mu.Lock()
	if s.building != nil {
		// No reader sees this map yet, and makeVisible sets the filter bits of all it
		// holds: a rebuild need not take the filter's shared lock for every record.
		s.building[customer] = rule
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	// The bit goes in before the record is visible, so Lookup never skips a throttle.
	t.filterMu.Lock()
	t.filter.Load().add(h)
	t.filterMu.Unlock()
	t.filterAdd.Add(1)
	s.mu.Lock() // building stays nil once visible
	defer s.mu.Unlock()
	s.update(func(m rules) { m[customer] = rule })
}

// del removes the customer's throttle. With expiresID set (an expiry tombstone), it
// removes it only if it is that throttle; otherwise it keeps it and returns it as kept.
//
// expiresCreated, when known, is the expired throttle's creation time: a current one
// created before it is older than the throttle the tombstone expires, so it goes too.
func (t *Table) del(customer, expiresID string, expiresCreated int64) (removed, kept *Record) {
	s := t.shardOf(customer)
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.current()[customer]
	if !ok {
		return nil, nil
	}
	rec := r.Record(customer)
	cur := &rec
	if expiresID != "" && cur.ID != expiresID && (expiresCreated == 0 || cur.CreatedAt.UnixMilli() >= expiresCreated) {
		return nil, cur
	}
	s.update(func(m rules) { delete(m, customer) })
	return cur, nil
}

// rebuildFilter replaces the membership filter with one of the current throttles once
// enough records were added since the last rebuild that stale bits may be many.
func (t *Table) rebuildFilter() {
	if t.filterAdd.Load() < 4096 {
		return
	}
	t.filterMu.Lock() // no add can slip between the scan and the swap
	defer t.filterMu.Unlock()
	t.filterAdd.Store(0)
	f := new(filter)
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for c := range s.current() {
			f.add(maphash.String(t.seed, c))
		}
		s.mu.Unlock()
	}
	t.filter.Store(f)
}

// home is the partition a key belongs to. The caller holds partsMu.
func (t *Table) home(key []byte) int {
	if len(t.parts) == 0 {
		return -1
	}
	return (&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: key}, t.parts...)
}

// repartition takes the topic's partition count, before any record of a new partition is
// read. Throttles whose key now belongs to another partition no longer count: they are
// dropped and reported (ChangeMoved), as a table rebuilt from zero would not hold them.
func (t *Table) repartition(n int) {
	t.partsMu.Lock()
	defer t.partsMu.Unlock()
	if n == len(t.parts) {
		return
	}
	old := t.parts
	t.parts = make([]int, n)
	for i := range t.parts {
		t.parts[i] = i
	}
	if len(old) == 0 {
		return
	}
	oldHome := func(c string) int { return (&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: []byte(c)}, old...) }
	var moved []Record
	for i := range t.shards {
		moved = append(moved, t.shards[i].removeIf(func(c string, _ Rule) bool {
			return t.home([]byte(c)) != oldHome(c)
		})...)
	}
	t.log.Warn("partitions added to the throttle topic: throttles whose key moved to another partition no longer count until written again",
		zap.Int("partitions_before", len(old)), zap.Int("partitions", n), zap.Int("throttles_moved", len(moved)))
	for _, r := range moved {
		t.notify(Change{Kind: ChangeMoved, Customer: r.Customer, Record: r, Offset: -1, Rebuilding: !t.Ready()})
	}
}

// removeIf removes the shard's throttles for which drop is true and returns them.
func (s *shard) removeIf(drop func(customer string, r Rule) bool) []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	var gone []Record
	for c, r := range s.current() {
		if drop(c, r) {
			gone = append(gone, r.Record(c))
		}
	}
	if len(gone) > 0 {
		s.update(func(m rules) {
			for _, r := range gone {
				delete(m, r.Customer)
			}
		})
	}
	return gone
}

// makeVisible hands the maps built while rebuilding to readers, each after the filter bits
// of its throttles (set skips them while building). It runs once, when the Follower
// first catches up.
func (t *Table) makeVisible() {
	t.filterMu.Lock() // as in rebuildFilter: no filter swap may drop the bits added here
	defer t.filterMu.Unlock()
	f := t.filter.Load()
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for c := range s.building {
			f.add(maphash.String(t.seed, c))
		}
		m := s.building
		s.visible.Store(&m)
		s.building = nil
		s.mu.Unlock()
	}
}

// forgetExpired forgets expired throttles, so memory does not grow with them.
func (t *Table) forgetExpired() {
	t.forgetRun.Lock()
	defer t.forgetRun.Unlock()
	defer t.rebuildFilter()
	now := t.cfg.clock()
	for i := range t.shards {
		expired := t.shards[i].removeIf(func(_ string, r Rule) bool { return !r.Active(now) })
		for _, r := range expired {
			t.notify(Change{Kind: ChangeExpired, Customer: r.Customer, Record: r, Offset: -1, Rebuilding: !t.Ready()})
		}
	}
}
