package registry_test

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pkg/throttle/throttletest/registry"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestReadOnlyFollowsAnotherRegistry: a read-only registry on the topic another one
// writes (as a second region's registry reads the mirrored _schemas) serves the ids
// written before it started and after, with their schemas; it answers a schema it has
// with its id and refuses new ones and level changes, and it writes nothing to the
// topic.
func TestReadOnlyFollowsAnotherRegistry(t *testing.T) {
	b := broker(t, t.TempDir())
	defer b.Close()
	brokers := registry.WithBrokers(b.ListenAddrs()...)
	primary, _ := serve(t, brokers)

	schemaOf := func(i int) string { return record(fieldA, `{"name":"f`+strconv.Itoa(i)+`","type":"long","default":0}`) }
	ids := map[int]int{}
	for i := range 3 {
		status, id, e := register(t, primary, "s-value", schemaOf(i))
		if status != http.StatusOK {
			t.Fatalf("register %d on the primary: %d %+v", i, status, e)
		}
		ids[i] = id
	}
	end := topicEnd(t, b)

	follower, _ := serve(t, brokers, registry.WithReadOnly())
	for i := range 3 {
		checkServes(t, follower, ids[i], schemaOf(i), 0)
	}
	for i := 3; i < 6; i++ {
		status, id, e := register(t, primary, "s-value", schemaOf(i))
		if status != http.StatusOK {
			t.Fatalf("register %d on the primary: %d %+v", i, status, e)
		}
		ids[i] = id
		checkServes(t, follower, id, schemaOf(i), 5*time.Second)
	}

	if status, id, _ := register(t, follower, "s-value", schemaOf(4)); status != http.StatusOK || id != ids[4] {
		t.Fatalf("registering a schema the follower has: %d id %d, want 200 id %d", status, id, ids[4])
	}
	if status, _, e := register(t, follower, "s-value", schemaOf(99)); status != http.StatusUnprocessableEntity || e.Code != 42205 {
		t.Fatalf("registering a new schema on the follower: %d %+v, want 422 42205", status, e)
	}
	if status := do(t, http.MethodPut, follower+"/config", map[string]string{"compatibility": "NONE"}, nil); status != http.StatusUnprocessableEntity {
		t.Fatalf("PUT /config on the follower: %d, want 422", status)
	}
	if got, want := topicEnd(t, b), end+3; got != want {
		t.Fatalf("topic ends at %d, want %d: the follower wrote to it", got, want)
	}
}

// checkServes waits up to within for GET /schemas/ids/{id} to answer schema.
func checkServes(t *testing.T, base string, id int, schema string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var got struct {
			Schema string `json:"schema"`
		}
		status := do(t, http.MethodGet, base+"/schemas/ids/"+strconv.Itoa(id), nil, &got)
		if status == http.StatusOK && sameJSON(got.Schema, schema) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("id %d not served by the follower (%d)", id, status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// topicEnd is the end offset of the registry's topic.
func topicEnd(t *testing.T, b *kfake.Cluster) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrListOffsetsRequest()
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = registry.DefaultTopic
	p := kmsg.NewListOffsetsRequestTopicPartition()
	p.Timestamp = -1
	rt.Partitions = append(rt.Partitions, p)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(context.Background(), cl)
	if err != nil || len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 || resp.Topics[0].Partitions[0].ErrorCode != 0 {
		t.Fatalf("list offsets: %v %+v", err, resp)
	}
	return resp.Topics[0].Partitions[0].Offset
}

// sameJSON compares two JSON texts whatever their spacing.
func sameJSON(a, b string) bool {
	var va, vb any
	if json.Unmarshal([]byte(a), &va) != nil || json.Unmarshal([]byte(b), &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}
