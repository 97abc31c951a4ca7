package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

// The test process cannot reach the broker: it advertises its network alias, which
// only containers resolve. Everything that touches a topic directly goes through the
// probe container (cmd/probe) over its mapped HTTP port; these are its client's types.

type probeHeader struct {
	Key   string `json:"key"`
	Value []byte `json:"value"`
}

type probeRecord struct {
	Partition *int          `json:"partition,omitempty"`
	Offset    int64         `json:"offset"`
	Key       []byte        `json:"key"`
	Value     []byte        `json:"value"`
	Headers   []probeHeader `json:"headers,omitempty"`
	Time      time.Time     `json:"time"`
}

func (r probeRecord) header(key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

func (r probeRecord) partition() int {
	if r.Partition == nil {
		return -1
	}
	return *r.Partition
}

type topicDump struct {
	Topic      string `json:"topic"`
	Partitions []struct {
		Partition int   `json:"partition"`
		Start     int64 `json:"start"`
		End       int64 `json:"end"`
		Leader    int   `json:"leader"`
		Replicas  []int `json:"replicas"`
		ISR       []int `json:"isr"`
	} `json:"partitions"`
	Records []probeRecord `json:"records"`
}

// byKey returns the records of customer's key, in log order.
func (d topicDump) byKey(customer string) []probeRecord {
	var out []probeRecord
	for _, r := range d.Records {
		if string(r.Key) == customer {
			out = append(out, r)
		}
	}
	return out
}

// dump reads the whole topic through the probe.
func (s *stack) dump(ctx context.Context, topic string) (topicDump, error) {
	var d topicDump
	base, err := s.probe.url(ctx)
	if err != nil {
		return d, err
	}
	status, _, err := do(ctx, http.MethodGet, base+"/v1/topics/"+url.PathEscape(topic), "", nil, &d)
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("probe: dump %s: status %d", topic, status)
	}
	return d, err
}

// mustDump is dump for a test, retried for a while (the broker may be coming back).
func (s *stack) mustDump(t *testing.T, topic string) topicDump {
	t.Helper()
	var d topicDump
	eventually(t, 30*time.Second, 200*time.Millisecond, "dump "+topic, func(ctx context.Context) (bool, string) {
		var err error
		d, err = s.dump(ctx, topic)
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	return d
}

// produce writes raw records through the probe.
func (s *stack) produce(t *testing.T, topic string, recs ...probeRecord) {
	t.Helper()
	base := s.probe.mustURL(t)
	eventually(t, 30*time.Second, 200*time.Millisecond, "produce to "+topic, func(ctx context.Context) (bool, string) {
		status, _, err := do(ctx, http.MethodPost, base+"/v1/topics/"+url.PathEscape(topic)+"/records", "", recs, nil)
		if err != nil || status != http.StatusOK {
			return false, fmt.Sprintf("status %d, %v", status, err)
		}
		return true, ""
	})
}

// setTopicConfigs changes topic configs through the probe.
func (s *stack) setTopicConfigs(t *testing.T, topic string, cfgs map[string]string) {
	t.Helper()
	base := s.probe.mustURL(t)
	eventually(t, 30*time.Second, 200*time.Millisecond, "set configs of "+topic, func(ctx context.Context) (bool, string) {
		status, _, err := do(ctx, http.MethodPut, base+"/v1/topics/"+url.PathEscape(topic)+"/configs", "", cfgs, nil)
		if err != nil || status != http.StatusOK {
			return false, fmt.Sprintf("status %d, %v", status, err)
		}
		return true, ""
	})
}

// codec returns a throttle codec against the stack's registry, reached through its
// mapped port.
func (s *stack) codec(t *testing.T) *throttle.Codec {
	t.Helper()
	c, err := throttle.NewCodec(throttle.RegistryConfig{URL: s.registry.mustURL(t), Timeout: 5 * time.Second}, throttle.DefaultTopic)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// replay computes, from a dump of the throttle topic, the throttles a table that read it
// holds: what the README specifies for Table, written again independently. A record
// upserts; a tombstone deletes, unless it is an expiry tombstone naming another throttle
// than the customer's current one; a poison record (undecodable, invalid, or keyed by
// another customer) is skipped and counted. Expired throttles are left out.
func replay(d topicDump, codec *throttle.Codec, now time.Time) (map[string]throttle.Record, int, error) {
	recs := append([]probeRecord(nil), d.Records...)
	// Keys never change partition, so per-key order is per-partition order.
	sort.SliceStable(recs, func(i, j int) bool {
		if recs[i].partition() != recs[j].partition() {
			return recs[i].partition() < recs[j].partition()
		}
		return recs[i].Offset < recs[j].Offset
	})
	state := map[string]throttle.Record{}
	poison := 0
	for _, r := range recs {
		customer := string(r.Key)
		if r.Value == nil {
			if id, ok := r.header(throttle.HeaderExpires); ok {
				if cur, found := state[customer]; found && cur.ID != id {
					continue
				}
			}
			delete(state, customer)
			continue
		}
		rec, err := codec.Decode(r.Value)
		switch {
		case throttle.PoisonReason(err) != "":
			poison++
			continue
		case err != nil:
			return nil, poison, fmt.Errorf("decode %s/%d@%d: %w", d.Topic, r.partition(), r.Offset, err)
		case rec.Customer != customer:
			poison++
			continue
		}
		state[customer] = rec
	}
	for c, r := range state {
		if !r.Active(now) {
			delete(state, c)
		}
	}
	return state, poison, nil
}

// partitionOf is the partition the services' murmur2 partitioner gives customer's key
// on a topic of n partitions.
func partitionOf(customer string, n int) int {
	parts := make([]int, n)
	for i := range parts {
		parts[i] = i
	}
	return (&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: []byte(customer)}, parts...)
}

// customerOnPartition returns a customer id (with prefix) whose key lands on partition p.
func customerOnPartition(prefix string, p, n int) string {
	for i := 0; ; i++ {
		c := fmt.Sprintf("%s-%d", prefix, i)
		if partitionOf(c, n) == p {
			return c
		}
	}
}
