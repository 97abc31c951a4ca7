package limit

import (
	"encoding/binary"
	"math"
	"math/big"
	"testing"
	"time"
)

// model is GCRA in exact integers (math/big), as the Limiter's doc describes it: the
// theoretical arrival time tat of the next event; a request of n fits when
// max(tat, t) + n*T - t <= q*T, with T = ceil(w/q).
type model struct {
	tat *big.Int
	id  string
}

func (m *model) take(id string, q Quota, n int64, t int64) (allowed bool, remaining int64, reset, retry *big.Int) {
	bt := big.NewInt(t)
	if m.tat == nil || m.id != id {
		m.tat, m.id = new(big.Int).Set(bt), id
	}
	w, bq := big.NewInt(int64(q.W)), big.NewInt(q.Q)
	T := new(big.Int).Add(w, new(big.Int).Sub(bq, big.NewInt(1)))
	T.Quo(T, bq)
	if T.Sign() == 0 {
		T.SetInt64(1)
	}
	span := new(big.Int).Mul(bq, T)
	tat := m.tat
	if tat.Cmp(bt) < 0 {
		tat = bt
	}
	used := new(big.Int).Sub(tat, bt)
	room := new(big.Int).Sub(span, used)
	rem := new(big.Int).Quo(room, T).Int64()
	if n > q.Q {
		return false, rem, used, used
	}
	cost := new(big.Int).Mul(big.NewInt(n), T)
	if cost.Cmp(room) <= 0 {
		m.tat = new(big.Int).Add(tat, cost)
		after := new(big.Int).Sub(room, cost)
		return true, new(big.Int).Quo(after, T).Int64(), new(big.Int).Add(used, cost), big.NewInt(0)
	}
	return false, rem, used, new(big.Int).Sub(cost, room)
}

// sat is x as a time.Duration, at most the longest one (as the Limiter reports).
func sat(x *big.Int) time.Duration {
	if x.Cmp(big.NewInt(math.MaxInt64)) > 0 {
		return math.MaxInt64
	}
	return time.Duration(x.Int64())
}

// FuzzLimiterMatchesExactGCRA drives the Limiter and the exact model with the same
// requests, at the extremes of every field: limits up to the largest int64, windows up
// to the longest time.Duration, requests of up to the whole quota, times spread over
// centuries. Every decision and every figure must match: no overflow may admit or refuse
// what the quota does not.
func FuzzLimiterMatchesExactGCRA(f *testing.F) {
	f.Add(int64(20), int64(time.Minute), []byte{1, 0, 1, 0, 5, 200})
	f.Add(int64(math.MaxInt64), int64(math.MaxInt64), []byte{255, 255, 1, 1})
	f.Add(int64(1), int64(math.MaxInt64), []byte{1, 0, 1, 255, 1, 0})
	f.Add(int64(2), int64(math.MaxInt64-1), []byte{1, 0, 1, 0, 1, 9})
	f.Add(int64(math.MaxInt64-1), int64(time.Millisecond), []byte{7, 7, 7, 7})
	f.Fuzz(func(t *testing.T, limit, window int64, ops []byte) {
		if limit < 1 || window < 1 {
			return
		}
		q := Quota{Q: limit, W: time.Duration(window)}
		l := NewLimiter()
		var m model
		now := l.epoch
		for len(ops) >= 4 {
			// n: small, or near the quota; the step: small, or huge.
			n := int64(ops[0]%8) + 1
			if ops[0]&0x80 != 0 {
				n = max(limit-int64(ops[0]&0x7f), 1)
			}
			step := time.Duration(binary.LittleEndian.Uint16(ops[1:3]))
			unit := [4]time.Duration{1, time.Millisecond, max(time.Duration(window/1000), 1), 24 * time.Hour}[ops[3]%4]
			ops = ops[4:]
			if step > math.MaxInt64/unit {
				return
			}
			step *= unit
			if d := now.Sub(l.epoch); d > math.MaxInt64-step {
				return // past the longest uptime a time.Time can measure
			}
			now = now.Add(step)
			got := l.Take("k", "id", q, n, now)
			allowed, rem, reset, retry := m.take("id", q, n, int64(now.Sub(l.epoch)))
			if got.Allowed != allowed || got.Remaining != rem || got.Reset != sat(reset) || (!allowed && got.RetryAfter != sat(retry)) {
				t.Fatalf("quota %+v, n %d at +%v: got %+v, exact GCRA says allowed %v remaining %d reset %v retry %v",
					q, n, now.Sub(l.epoch), got, allowed, rem, sat(reset), sat(retry))
			}
		}
	})
}

// The cases that overflowed before: a window of centuries, and a limit near the largest
// int64. Neither may turn into "admit everything" or "refuse everything".
func TestExtremeQuotas(t *testing.T) {
	start := time.Now()
	t.Run("one event per 200 years", func(t *testing.T) {
		l := NewLimiter()
		q := Quota{Q: 1, W: 200 * 365 * 24 * time.Hour}
		if r := l.Take("k", "id", q, 1, start); !r.Allowed {
			t.Fatalf("first event: got %+v, want allowed (the bucket starts full)", r)
		}
		for _, later := range []time.Duration{0, time.Hour, 100 * 365 * 24 * time.Hour} {
			if r := l.Take("k", "id", q, 1, start.Add(later)); r.Allowed || r.RetryAfter <= 0 {
				t.Fatalf("another event %v later: got %+v, want refused", later, r)
			}
		}
	})
	t.Run("two events per 290 years", func(t *testing.T) {
		l := NewLimiter()
		q := Quota{Q: 2, W: 290 * 365 * 24 * time.Hour}
		for i := range 2 {
			if r := l.Take("k", "id", q, 1, start); !r.Allowed {
				t.Fatalf("event %d: got %+v, want allowed", i, r)
			}
		}
		if r := l.Take("k", "id", q, 1, start.Add(3*365*24*time.Hour)); r.Allowed {
			t.Fatalf("third event 3 years later: got %+v, want refused until 145 years have passed", r)
		}
	})
	t.Run("the largest limit per millisecond", func(t *testing.T) {
		l := NewLimiter()
		q := Quota{Q: math.MaxInt64, W: time.Millisecond}
		for i := range 3 {
			if r := l.Take("k", "id", q, 1<<40, start.Add(time.Duration(i))); !r.Allowed {
				t.Fatalf("request %d: got %+v, want allowed", i, r)
			}
		}
	})
	t.Run("the largest limit, the longest window", func(t *testing.T) {
		l := NewLimiter()
		q := Quota{Q: math.MaxInt64, W: math.MaxInt64}
		if r := l.Take("k", "id", q, math.MaxInt64, start); !r.Allowed || r.Remaining != 0 {
			t.Fatalf("the whole quota at once: got %+v, want allowed, nothing remaining", r)
		}
		if r := l.Take("k", "id", q, 1, start); r.Allowed {
			t.Fatalf("one more: got %+v, want refused", r)
		}
	})
	t.Run("a share of the largest limit", func(t *testing.T) {
		if got, want := Share(math.MaxInt64, 3, true), int64(math.MaxInt64/3+1); got != want {
			t.Fatalf("Share(MaxInt64, 3): got %d, want %d", got, want)
		}
	})
}
