// Package limit decides whether a customer's events fit its throttle: a GCRA limiter per
// customer and throttle, and the Enforcer that combines it with the throttle table and
// this replica's share of the fleet.
package limit

import (
	"hash/maphash"
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

type cell struct {
	id  string // the throttle this state was charged under
	tat int64  // nanoseconds since epoch
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
// more than q per window; at least 1ns.
func (q Quota) interval() int64 {
	w := int64(q.W)
	return max((w+q.Q-1)/q.Q, 1)
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

// Take charges n events (n ≥ 1) to key under throttle id with quota q (q.Q ≥ 1, q.W > 0)
// at now. A refused request charges nothing: all or nothing.
func (l *Limiter) Take(key, id string, q Quota, n int64, now time.Time) Result {
	t := int64(now.Sub(l.epoch))
	T := q.interval()
	span := q.Q * T // the bucket's depth in time: q events

	s := &l.shards[maphash.String(l.seed, key)%shardCount]
	s.mu.Lock()
	c := s.cells[key]
	if c == nil {
		// Clone: the key may point into a request buffer; the map outlives it.
		c = &cell{id: id, tat: t}
		s.cells[strings.Clone(key)] = c
	} else if c.id != id {
		c.id, c.tat = id, t // a TAT at or before now is a full bucket
	}
	tat := max(c.tat, t)
	if n > q.Q {
		s.mu.Unlock()
		reset := time.Duration(tat - t)
		return Result{Remaining: remaining(span, tat-t, T), Reset: reset, RetryAfter: reset}
	}
	next := tat + n*T
	if next-t <= span {
		c.tat = next
		s.mu.Unlock()
		return Result{Allowed: true, Remaining: remaining(span, next-t, T), Reset: time.Duration(next - t)}
	}
	s.mu.Unlock()
	return Result{
		Remaining:  remaining(span, tat-t, T),
		Reset:      time.Duration(tat - t),
		RetryAfter: time.Duration(next - span - t),
	}
}

// remaining is how many intervals T fit in what is left of the bucket. It can be
// negative without the clamp when the quota shrank (more replicas joined) after the
// bucket was drained under a larger one.
func remaining(span, used, T int64) int64 { return max((span-used)/T, 0) }

// Refund gives back n events charged by an allowed Take with the same key, id and quota,
// for a request that was then not accepted (its events could not be buffered). It does
// nothing if the key's state has moved to another throttle since.
func (l *Limiter) Refund(key, id string, q Quota, n int64) {
	s := &l.shards[maphash.String(l.seed, key)%shardCount]
	s.mu.Lock()
	if c := s.cells[key]; c != nil && c.id == id {
		c.tat -= n * q.interval()
	}
	s.mu.Unlock()
}

// Sweep forgets the state of keys whose bucket is full at now: such state behaves
// exactly like no state, so forgetting it changes no decision and bounds memory by the
// customers throttled recently.
func (l *Limiter) Sweep(now time.Time) (removed int) {
	t := int64(now.Sub(l.epoch))
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		for k, c := range s.cells {
			if c.tat <= t {
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
