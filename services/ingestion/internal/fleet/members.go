// Package fleet tells an ingestion replica how many replicas are alive, so each enforces
// its share of a customer's fleet-wide limit.
//
// Every replica writes a heartbeat to a small compacted topic (key: replica id, value:
// JSON Heartbeat) every interval, and a tombstone when it stops cleanly. Every replica
// reads that topic from offset zero like a table and counts the members whose last
// heartbeat is younger than its TTL. Compaction keeps one record per replica that ever
// ran, so the topic stays small.
package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Heartbeat is the value of a membership record.
type Heartbeat struct {
	Replica string    `json:"replica"`
	At      time.Time `json:"at"`
	// TTLMs is how long after At the sender counts as alive without a newer heartbeat.
	// Each replica states its own, so replicas with different intervals can coexist.
	TTLMs int64 `json:"ttl_ms"`
}

// Encode returns the record value of h.
func (h Heartbeat) Encode() ([]byte, error) { return json.Marshal(h) }

// ErrBadHeartbeat wraps every heartbeat that cannot be used.
var ErrBadHeartbeat = errors.New("fleet: bad heartbeat")

// DecodeHeartbeat parses the value of the record keyed key.
func DecodeHeartbeat(key string, value []byte) (Heartbeat, error) {
	var h Heartbeat
	if err := json.Unmarshal(value, &h); err != nil {
		return h, fmt.Errorf("%w: replica %q: %w", ErrBadHeartbeat, key, err)
	}
	switch {
	case h.Replica != key:
		return h, fmt.Errorf("%w: key %q carries replica %q", ErrBadHeartbeat, key, h.Replica)
	case h.At.IsZero():
		return h, fmt.Errorf("%w: replica %q: at is missing", ErrBadHeartbeat, key)
	case h.TTLMs <= 0:
		return h, fmt.Errorf("%w: replica %q: ttl_ms %d is not positive", ErrBadHeartbeat, key, h.TTLMs)
	}
	return h, nil
}

// Members is the membership view: the last heartbeat of each replica. It does no I/O and
// reads no clock: every time is passed in, so tests drive it with a fake clock. Safe for
// concurrent use.
type Members struct {
	self string

	mu       sync.Mutex
	last     map[string]member
	selfSeen time.Time // local time our own heartbeat was last read back
}

type member struct {
	seen time.Time // when the replica was last known alive, on our clock
	ttl  time.Duration
}

// NewMembers returns an empty view for the replica named self.
func NewMembers(self string) *Members {
	return &Members{self: self, last: map[string]member{}}
}

// Observe records heartbeat h, read at local time received.
//
// The replica counts as seen at the earlier of h.At (its clock) and received (ours).
// h.At alone would trust another machine's clock: one running ahead would stay "alive"
// after it died. received alone would count as alive every old heartbeat read while
// catching up from offset zero. The earlier of the two is right in both cases, and errs
// only towards forgetting a replica whose clock runs behind, whose share the others then
// take (over-admission, bounded, rather than refusals).
func (m *Members) Observe(h Heartbeat, received time.Time) {
	seen := h.At
	if received.Before(seen) {
		seen = received
	}
	ttl := time.Duration(h.TTLMs) * time.Millisecond
	m.mu.Lock()
	defer m.mu.Unlock()
	if prev, ok := m.last[h.Replica]; ok && prev.seen.After(seen) {
		return // an older heartbeat read late (another partition, a duplicate): keep the newer
	}
	m.last[h.Replica] = member{seen: seen, ttl: ttl}
	if h.Replica == m.self {
		m.selfSeen = received
	}
}

// Leave forgets a replica: it stopped cleanly and wrote a tombstone.
func (m *Members) Leave(replica string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.last, replica)
}

// Alive counts the replicas whose last heartbeat is younger than its TTL at now.
func (m *Members) Alive(now time.Time) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.aliveLocked(now)
}

func (m *Members) aliveLocked(now time.Time) int {
	n := 0
	for _, mb := range m.last {
		if now.Sub(mb.seen) < mb.ttl {
			n++
		}
	}
	return n
}

// Size is the fleet size this replica should divide limits by at now. known is false
// unless this replica read its own heartbeat back within ttl: only that proves its view
// is current (the broker takes its writes and it reads what others write). When known,
// alive includes this replica.
func (m *Members) Size(now time.Time, ttl time.Duration) (alive int, known bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.selfSeen.IsZero() || now.Sub(m.selfSeen) >= ttl {
		return 0, false
	}
	return max(m.aliveLocked(now), 1), true
}

// Replicas lists the replicas alive at now with when each was last seen.
func (m *Members) Replicas(now time.Time) map[string]time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]time.Time, len(m.last))
	for id, mb := range m.last {
		if now.Sub(mb.seen) < mb.ttl {
			out[id] = mb.seen
		}
	}
	return out
}
