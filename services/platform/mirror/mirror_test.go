package mirror

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
)

type memWriter struct {
	mu   sync.Mutex
	msgs []kafka.Message
}

func (w *memWriter) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msgs...)
	return nil
}

// TestBeatsReachAges: what Beat writes, Ages reads back as a small age per region; an
// older heartbeat read later (a mirror's duplicate) does not make the region younger or
// older; a record that is no heartbeat is skipped and counted.
func TestBeatsReachAges(t *testing.T) {
	w := &memWriter{}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Millisecond)
	defer cancel()
	Beat(ctx, w, "eu-west", 20*time.Millisecond, zap.NewNop())
	w.mu.Lock()
	msgs := append([]kafka.Message(nil), w.msgs...)
	w.mu.Unlock()
	if len(msgs) < 3 {
		t.Fatalf("got %d heartbeats in 120ms at 20ms, want several", len(msgs))
	}
	a := NewAges(zap.NewNop())
	for i, m := range msgs {
		m.Offset = int64(i)
		if err := a.Apply(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	newest, _ := Decode(msgs[len(msgs)-1].Value)
	_ = a.Apply(ctx, msgs[0]) // a duplicate of an old one
	now := time.Now()
	if got := a.Age(now)["eu-west"]; got != now.Sub(newest) {
		t.Fatalf("age %s, want %s (the newest heartbeat's)", got, now.Sub(newest))
	}
	for _, bad := range []kafka.Message{{Key: []byte("x"), Value: []byte("soon")}, {Value: Encode(now)}, {Key: []byte("y"), Value: nil}} {
		if err := a.Apply(ctx, bad); err != nil {
			t.Fatal(err)
		}
	}
	if a.Skipped() != 3 || len(a.Age(now)) != 1 {
		t.Fatalf("skipped %d, regions %v: want 3 skipped and only eu-west", a.Skipped(), a.Age(now))
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("1796600000000"))
	f.Add([]byte("-1"))
	f.Fuzz(func(t *testing.T, v []byte) {
		at, err := Decode(v)
		if err != nil {
			return
		}
		back, err := Decode(Encode(at))
		if at.UnixMilli() <= 0 || err != nil || !back.Equal(at) {
			t.Fatalf("accepted %q as %v, which does not survive a round trip (%v, %v)", v, at, back, err)
		}
	})
}
