package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

// TestPoisonRecord: records no Sluice program wrote, produced to the throttle topic by a
// raw client, are skipped and counted by every reader; throttles in force stay in force,
// later ones still arrive, and every service stays ready.
func TestPoisonRecord(t *testing.T) {
	s := sharedStack(t)
	s.waitFleet(t, 2)
	bases := s.bases(t)
	topic := throttle.DefaultTopic
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	victim := uniq("poison-victim")
	held := s.setThrottle(t, setRequest{Customer: victim, Limit: 1000, Window: "1m", Duration: "10m", Reason: "e2e: must survive poison"})
	waitVisible(t, bases, victim, held.ID, 30*time.Second)

	before := make([]int64, len(bases))
	for i, b := range bases {
		v, err := view(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		before[i] = v.poisonTotal()
	}

	// A valid record of another customer, keyed by the victim: it must not replace the
	// victim's throttle. Compaction keeps a key's last record whatever readers make of
	// it, so processing's sweeper writes the victim's throttle again after the poison
	// record (pkg/throttle's TestSweeperRepairsAThrottleBehindAPoisonRecord shows the log
	// and a rebuild after compaction); this test checks the readers.
	codec := s.codec(t)
	foreign, err := codec.Encode(&throttle.Record{
		ID: "poison-foreign", Customer: uniq("someone-else"), Limit: 1, Window: time.Minute,
		CreatedAt: time.Now().UTC().Truncate(time.Millisecond), ExpiresAt: held.ExpiresAt,
		Reason: throttle.Reason{Kind: throttle.ReasonManual, Note: "keyed by another customer"}, SetBy: "e2e",
	})
	if err != nil {
		t.Fatal(err)
	}
	// A schema id the registry knows, of a schema that is no throttle's. An id it does
	// not know is not poison: the record holds its partition until the registry has it
	// (pkg/throttle's TestTableHoldsARecordOfAnUnknownSchemaID).
	unknownSchema := []byte{0, 0, 0, 0, 0, 2, 'x'}
	binary.BigEndian.PutUint32(unknownSchema[1:5], uint32(registerSchema(t, s.registry.mustURL(t), "e2e-not-a-throttle-value", `"string"`)))
	badBody := append([]byte(nil), foreign[:5]...)
	badBody = append(badBody, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)
	poison := []probeRecord{
		{Key: []byte(uniq("poison-magic")), Value: []byte("{\"customer\":\"json, not avro\"}")},
		{Key: []byte(uniq("poison-short")), Value: []byte{0, 0, 0}},
		{Key: []byte(uniq("poison-schema")), Value: unknownSchema},
		{Key: []byte(uniq("poison-body")), Value: badBody},
		{Key: []byte(victim), Value: foreign},
	}
	written := time.Now()
	s.produce(t, topic, poison...)

	// Every replica counts them, stays ready and fresh, and keeps the victim's throttle.
	for i, b := range bases {
		at := eventuallyAt(t, 30*time.Second, 10*time.Millisecond, "poison counted", func(ctx context.Context) (bool, string) {
			v, err := view(ctx, b)
			if err != nil {
				return false, err.Error()
			}
			return v.poisonTotal() >= before[i]+int64(len(poison)), "not yet"
		})
		v, err := view(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		if got := v.poisonTotal() - before[i]; got != int64(len(poison)) {
			t.Errorf("replica %d counted %d poison records, want %d (%v)", i+1, got, len(poison), v.Poison)
		}
		if !v.Ready || !v.Fresh {
			t.Errorf("replica %d after poison: ready %v, fresh %v", i+1, v.Ready, v.Fresh)
		}
		if th, ok := v.find(victim); !ok || th.ID != held.ID {
			t.Errorf("replica %d: victim's throttle is %+v (found %v), want id %s", i+1, th, ok, held.ID)
		}
		if status := readyz(ctx, b); status != http.StatusOK {
			t.Errorf("replica %d /readyz: got %d, want 200", i+1, status)
		}
		report(t, "replica %d skipped all %d poison records within %s; reasons %v", i+1, len(poison), round(at.Sub(written)), v.Poison)
	}

	// Processing too.
	admin := s.processing.mustURL(t)
	if status := readyz(ctx, admin); status != http.StatusOK {
		t.Errorf("processing /readyz after poison: got %d, want 200", status)
	}
	var got adminThrottle
	status, _, err := do(ctx, http.MethodGet, admin+"/v1/throttles/"+url.PathEscape(victim), s.token, nil, &got)
	if err != nil || status != http.StatusOK || got.ID != held.ID {
		t.Errorf("processing: victim's throttle: status %d, id %q (%v), want 200 and %s", status, got.ID, err, held.ID)
	}

	// The readers are not stuck behind the poison: a new throttle still arrives, fast.
	next := uniq("after-poison")
	th := s.setThrottle(t, setRequest{Customer: next, Limit: 10, Window: "1m", Duration: "10m"})
	seen := waitVisible(t, bases, next, th.ID, 30*time.Second)
	for i, at := range seen {
		report(t, "replica %d shows a throttle set after the poison %s after its created_at", i+1, round(at.Sub(th.CreatedAt)))
	}
	s.liftThrottle(t, next)
	s.liftThrottle(t, victim)
}

// registerSchema registers an Avro schema under subject and returns its id.
func registerSchema(t *testing.T, registry, subject, schema string) int {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"schema": schema})
	resp, err := http.Post(registry+"/subjects/"+subject+"/versions", "application/vnd.schemaregistry.v1+json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		ID int `json:"id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusOK || got.ID == 0 {
		t.Fatalf("register %s: %d, %v", subject, resp.StatusCode, err)
	}
	return got.ID
}
