package throttle_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/follow"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
)

// registerVariant registers the throttle schema with one more optional field at its
// end, so it gets an id of its own that no codec has cached; a record of it is a record
// of the schema followed by the null branch of that field.
func registerVariant(t *testing.T, s *throttletest.Stack, topic string, n int) uint32 {
	t.Helper()
	var sch map[string]any
	if err := json.Unmarshal([]byte(throttle.Schema()), &sch); err != nil {
		t.Fatal(err)
	}
	sch["fields"] = append(sch["fields"].([]any), map[string]any{"name": fmt.Sprintf("variant%d", n), "type": []any{"null", "string"}, "default": nil})
	schema, _ := json.Marshal(sch)
	body, _ := json.Marshal(map[string]string{"schema": string(schema)})
	for {
		resp, err := http.Post(s.RegistryURL()+"/subjects/"+topic+"-value/versions", "application/vnd.schemaregistry.v1+json", bytes.NewReader(body))
		if err != nil {
			time.Sleep(10 * time.Millisecond) // the writer's side: not under test
			continue
		}
		var out struct{ ID uint32 }
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if err != nil || out.ID == 0 {
			t.Fatalf("register variant %d: %v (status %s)", n, err, resp.Status)
		}
		return out.ID
	}
}

// TestRegistryOutagesLoseNothing stops the registry for random lengths, at least 20
// times, while a table rebuilds and while it tails, with records written under schema
// ids it has not cached: every partition waits at the record it cannot decode yet, and
// in the end the tailing table and a table rebuilt from zero hold every throttle.
func TestRegistryOutagesLoseNothing(t *testing.T) {
	const parts, outages = 3, 24
	f := newFixture(t, parts, throttletest.Options{})
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	want := map[string]int64{}
	round := 0
	// Each round writes under a new schema id, so each outage meets an id to fetch.
	write := func(n int, id uint32) {
		var msgs []kafka.Message
		for i := range n {
			c := fmt.Sprintf("r%02d-c%d", round, i)
			m := f.home(rec(c, int64(round*100+i), time.Hour))
			binary.BigEndian.PutUint32(m.Value[1:5], id)
			m.Value = append(m.Value, 0) // the variant's field: null
			msgs = append(msgs, m)
			want[c] = int64(round*100 + i)
		}
		f.put(msgs...)
	}
	for range 4 {
		round++
		write(30, registerVariant(t, f.s, f.topic, round))
	}
	waited := 0
	// Rebuild under outages.
	f.s.StopRegistry()
	tb := f.start(throttle.WithRead(follow.WithStallTimeout(50 * time.Millisecond)))
	eventually(t, "a partition waiting at a record", func() bool {
		for _, p := range tb.Stats().Partitions {
			if p.Waiting >= 0 {
				return true
			}
		}
		return false
	})
	if tb.Ready() {
		t.Fatal("ready while partitions wait for the registry, want not ready")
	}
	if err := f.s.StartRegistry(); err != nil {
		t.Fatal(err)
	}
	for i := range outages {
		if i == outages/2 { // the second half while tailing
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			if err := tb.WaitReady(ctx); err != nil {
				t.Fatal(err)
			}
			cancel()
		}
		round++
		id := registerVariant(t, f.s, f.topic, round)
		f.s.StopRegistry()
		write(5, id)
		deadline := time.Now().Add(time.Duration(20+rng.IntN(300)) * time.Millisecond)
		seen := false
		for time.Now().Before(deadline) || (!seen && time.Now().Before(deadline.Add(5*time.Second))) {
			for _, p := range tb.Stats().Partitions {
				seen = seen || p.Waiting >= 0
			}
			time.Sleep(2 * time.Millisecond)
		}
		if seen {
			waited++
		}
		if err := f.s.StartRegistry(); err != nil {
			t.Fatal(err)
		}
	}
	if waited < outages/2 {
		t.Errorf("partitions waited during %d of %d outages, want most: the outages missed the reads", waited, outages)
	}
	check := func(tb *throttle.Table, how string) {
		eventually(t, how+" table holding every throttle", func() bool {
			for c, lim := range want {
				if r, ok := tb.Lookup(c); !ok || r.Limit != lim {
					return false
				}
			}
			return true
		})
		if st := tb.Stats(); st.Poison["unknown_schema"] != 0 {
			t.Errorf("%s: %d records counted unknown_schema, want 0: a good record was skipped", how, st.Poison["unknown_schema"])
		}
	}
	check(tb, "tailing")
	check(f.run(), "rebuilt")
	t.Logf("%d outages, %d throttles, partitions seen waiting %d times, registry retries %d; 0 lost",
		outages, len(want), waited, tb.Stats().RegistryRetries)
}
