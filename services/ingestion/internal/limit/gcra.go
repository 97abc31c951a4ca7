// Package limit decides whether a customer's events fit its throttle: a GCRA limiter per
// customer and throttle, and the Enforcer that combines it with the throttle table and
// this replica's share of the fleet.
package limit

import (
	"hash/maphash"
	"math"
	"strings"
	"sync"
	"time"
)

// Limiter is a generic cell rate algorithm (GCRA) limiter: a token bucket of capacity q
// that refills continuously at q per window, stored as one number per key, the
// theoretical arrival time (TAT) of the next event.
//
// Why GCRA rather than a fixed window: a fixed window lets a client send its whole quota
// at the end of one window and again at the start of the next, 2q events in an instant.
// Here, once the bucket is empty, events are admitted one every window/q, whatever the
// wall-clock boundaries. A client idle for a whole window may still send q at once (the
// bucket is full), so any window-long interval admits at most 2q-1 events, and the
// long-run rate never exceeds q per window.
//
// State is keyed by customer and remembers the throttle id it was charged under: a new
// throttle (a new id) starts from a full bucket instead of inheriting the debt of the old
// one. Take never allocates once a customer has state, and takes one short lock of one
// of 256 shards.
type Limiter struct {
	seed   maphash.Seed
	epoch  time.Time // monotonic origin of the TATs
	shards [shardCount]shard
}

const shardCount = 256

type shard struct {
	mu    sync.Mutex
	cells map[string]*cell
	_     [48]byte // keep each shard's lock on its own cache line
}

// cell is one key's state: the bucket's debt, in nanoseconds of refill, as of at.
// Keeping the debt relative rather than an absolute arrival time keeps every sum within
// uint64 for any quota (a window up to the longest time.Duration, any limit), so no
// overflow can admit or refuse what the quota does not.
type cell struct {
	id   string // the throttle this state was charged under
	debt uint64 // nanoseconds until the bucket is full again, as of at
	at   int64  // nanoseconds since epoch
}

// used is the cell's debt at t (refilled since at, never below empty).
func (c *cell) used(t int64) uint64 {
	if t <= c.at {
		return c.debt
	}
	if el := uint64(t - c.at); el < c.debt {
		return c.debt - el
	}
	return 0
}

// NewLimiter returns an empty limiter.
func NewLimiter() *Limiter {
	l := &Limiter{seed: maphash.MakeSeed(), epoch: time.Now()}
	for i := range l.shards {
		l.shards[i].cells = map[string]*cell{}
	}
	return l
}

// Quota is q events per window w.
type Quota struct {
	Q int64
	W time.Duration
}

// interval is the emission interval window/q, rounded up so that rounding never admits
// more than q per window; at least 1ns. span is the bucket's depth in time, q intervals:
// at most w+q-1 nanoseconds, which fits in a uint64.
func (q Quota) interval() (interval, span uint64) {
	w, n := uint64(q.W), uint64(q.Q)
	interval = w / n
	if w%n != 0 || interval == 0 {
		interval++
	}
	return interval, n * interval
}

// Result is a limiter decision. Durations are from now.
type Result struct {
	Allowed bool
	// Remaining is how many more events would be admitted right now, after this
	// decision.
	Remaining int64
	// Reset is how long until the bucket is full again (the whole quota available).
	Reset time.Duration
	// RetryAfter is, for a refusal, how long until this request (n events) would be
	// admitted. For a request of more than q events, which never fits, it is Reset.
	RetryAfter time.Duration
}

// dur is a duration of ns nanoseconds, at most the longest time.Duration.
func dur(ns uint64) time.Duration { return time.Duration(min(ns, math.MaxInt64)) }

// Take charges n events (n ≥ 1) to key under throttle id with quota q (q.Q ≥ 1, q.W > 0)
// at now. A refused request charges nothing: all or nothing.
func (l *Limiter) Take(key, id string, q Quota, n int64, now time.Time) Result {
	t := int64(now.Sub(l.epoch))
	T, span := q.interval()

	s := &l.shards[maphash.String(l.seed, key)%shardCount]
	s.mu.Lock()
	c := s.cells[key]
	if c == nil {
		// Clone: the key may point into a request buffer; the map outlives it.
		c = &cell{id: id, at: t}
		s.cells[strings.Clone(key)] = c
	} else if c.id != id {
		c.id, c.debt, c.at = id, 0, t // a new throttle starts from a full bucket
	}
	d := c.used(t)
	room := span - d // d ≤ span: a debt never exceeds the bucket
	if n > q.Q {
		s.mu.Unlock()
		return Result{Remaining: int64(room / T), Reset: dur(d), RetryAfter: dur(d)}
	}
	cost := uint64(n) * T // ≤ span, since n ≤ q
	if cost <= room {
		c.debt, c.at = d+cost, t
		s.mu.Unlock()
		return Result{Allowed: true, Remaining: int64((room - cost) / T), Reset: dur(d + cost)}
	}
	s.mu.Unlock()
	return Result{Remaining: int64(room / T), Reset: dur(d), RetryAfter: dur(cost - room)}
}

// Refund gives back n events charged by an allowed Take with the same key, id and quota,
// for a request that was then not accepted (its events could not be buffered). It does
// nothing if the key's state has moved to another throttle since.
func (l *Limiter) Refund(key, id string, q Quota, n int64) {
	T, _ := q.interval()
	s := &l.shards[maphash.String(l.seed, key)%shardCount]
	s.mu.Lock()
	if c := s.cells[key]; c != nil && c.id == id {
		c.debt -= min(uint64(n)*T, c.debt)
	}
	s.mu.Unlock()
}

// ForgetFull forgets the state of keys whose bucket is full at now: such state behaves
// exactly like no state, so forgetting it changes no decision and bounds memory by the
// customers throttled recently.
func (l *Limiter) ForgetFull(now time.Time) (removed int) {
	t := int64(now.Sub(l.epoch))
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		for k, c := range s.cells {
			if c.used(t) == 0 {
				delete(s.cells, k)
				removed++
			}
		}
		s.mu.Unlock()
	}
	return removed
}

// Len returns how many keys hold state.
func (l *Limiter) Len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.cells)
		s.mu.Unlock()
	}
	return n
}
