package fleet

import (
	"errors"
	"testing"
	"time"
)

var t0 = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

const ttl = 3 * time.Second

func hb(replica string, at time.Time) Heartbeat {
	return Heartbeat{Replica: replica, At: at, TTLMs: ttl.Milliseconds()}
}

// clock is a fake clock the tests move by hand.
type clock struct{ now time.Time }

func (c *clock) advance(d time.Duration) time.Time { c.now = c.now.Add(d); return c.now }

// beatAll has every replica in ids heartbeat at the clock's time, read back at once.
func beatAll(m *Members, c *clock, ids ...string) {
	for _, id := range ids {
		m.Observe(hb(id, c.now), c.now)
	}
}

func TestMembersShareWithTwoAndThreeReplicasAndAfterOneStops(t *testing.T) {
	c := &clock{now: t0}
	m := NewMembers("a")
	size := func() int {
		n, known := m.Size(c.now, ttl)
		if !known {
			t.Fatalf("at %s: size unknown, want known (own heartbeat just read)", c.now.Sub(t0))
		}
		return n
	}

	beatAll(m, c, "a", "b")
	if n := size(); n != 2 {
		t.Fatalf("two replicas: got %d, want 2", n)
	}
	c.advance(time.Second)
	beatAll(m, c, "a", "b", "c")
	if n := size(); n != 3 {
		t.Fatalf("three replicas: got %d, want 3", n)
	}

	// c stops without a tombstone (a crash): it counts until its TTL has passed.
	for range 2 {
		c.advance(time.Second)
		beatAll(m, c, "a", "b")
	}
	if n := size(); n != 3 {
		t.Fatalf("2s after c's last heartbeat: got %d, want 3 (TTL is 3s)", n)
	}
	c.advance(time.Second)
	beatAll(m, c, "a", "b")
	if n := size(); n != 2 {
		t.Fatalf("3s after c's last heartbeat: got %d, want 2", n)
	}

	// b stops cleanly: its tombstone removes it at once.
	m.Leave("b")
	if n := size(); n != 1 {
		t.Fatalf("after b's tombstone: got %d, want 1", n)
	}

	// b comes back.
	c.advance(time.Second)
	beatAll(m, c, "a", "b")
	if n := size(); n != 2 {
		t.Fatalf("b back: got %d, want 2", n)
	}
}

func TestMembersUnknownUntilOwnHeartbeatIsReadBack(t *testing.T) {
	m := NewMembers("a")
	if _, known := m.Size(t0, ttl); known {
		t.Fatal("empty view: known, want unknown")
	}
	m.Observe(hb("b", t0), t0)
	if _, known := m.Size(t0, ttl); known {
		t.Fatal("others seen but not ourselves: known, want unknown")
	}
	m.Observe(hb("a", t0), t0)
	if n, known := m.Size(t0, ttl); !known || n != 2 {
		t.Fatalf("got %d known=%t, want 2 known", n, known)
	}
	// The broker goes away: nothing is read any more. Once our own heartbeat is older
	// than the TTL the view is stale, and the caller enforces full limits.
	if _, known := m.Size(t0.Add(ttl-time.Millisecond), ttl); !known {
		t.Fatal("just within the TTL: unknown, want known")
	}
	if n, known := m.Size(t0.Add(ttl), ttl); known {
		t.Fatalf("own heartbeat one TTL old: known with %d, want unknown", n)
	}
}

func TestMembersOldHeartbeatsReadWhileCatchingUpDoNotCount(t *testing.T) {
	m := NewMembers("a")
	now := t0.Add(time.Hour)
	// A rebuild from offset zero reads heartbeats written long ago, now.
	m.Observe(hb("gone-1", t0), now)
	m.Observe(hb("gone-2", t0.Add(30*time.Minute)), now)
	m.Observe(hb("a", now), now)
	if n, known := m.Size(now, ttl); !known || n != 1 {
		t.Fatalf("got %d known=%t, want 1 known (old heartbeats are not alive)", n, known)
	}
}

func TestMembersClockAheadDoesNotKeepDeadReplicaAlive(t *testing.T) {
	m := NewMembers("a")
	// b's clock runs an hour ahead; we read its heartbeat at t0.
	m.Observe(hb("b", t0.Add(time.Hour)), t0)
	m.Observe(hb("a", t0.Add(ttl)), t0.Add(ttl))
	if n := m.Alive(t0.Add(ttl)); n != 1 {
		t.Fatalf("a TTL after b's last heartbeat was read: %d alive, want 1 (b judged by when we read it)", n)
	}
}

func TestMembersKeepsNewestHeartbeat(t *testing.T) {
	m := NewMembers("a")
	m.Observe(hb("b", t0.Add(2*time.Second)), t0.Add(2*time.Second))
	m.Observe(hb("b", t0), t0.Add(2*time.Second)) // an older one read late
	if got := m.Replicas(t0.Add(4 * time.Second)); len(got) != 1 {
		t.Fatalf("b at 4s: got %v, want alive (its newest heartbeat is 2s old)", got)
	}
}

func TestMembersOwnTTL(t *testing.T) {
	m := NewMembers("a")
	m.Observe(Heartbeat{Replica: "slow", At: t0, TTLMs: 10_000}, t0)
	if n := m.Alive(t0.Add(9 * time.Second)); n != 1 {
		t.Fatalf("a replica with a 10s TTL, 9s later: %d alive, want 1", n)
	}
}

func TestDecodeHeartbeat(t *testing.T) {
	good, err := hb("r1", t0).Encode()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		key   string
		value string
		ok    bool
	}{
		{"good", "r1", string(good), true},
		{"key mismatch", "r2", string(good), false},
		{"not json", "r1", "{", false},
		{"no time", "r1", `{"replica":"r1","ttl_ms":3000}`, false},
		{"no ttl", "r1", `{"replica":"r1","at":"2030-01-01T12:00:00Z"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := DecodeHeartbeat(tt.key, []byte(tt.value))
			if tt.ok {
				if err != nil || !h.At.Equal(t0) || h.TTLMs != 3000 {
					t.Fatalf("got %+v, %v; want the heartbeat back", h, err)
				}
				return
			}
			if !errors.Is(err, ErrBadHeartbeat) {
				t.Fatalf("got %v, want ErrBadHeartbeat", err)
			}
		})
	}
}
