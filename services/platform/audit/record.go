// Package audit accounts for every event of the pipeline, after Uber's Chaperone. Each
// tier counts the events it saw per events partition and per bucket of ingestion time
// (a minute by default) and publishes the counts to a compacted audit topic. The
// reconciliation compares the tiers per partition and bucket: accepted by ingestion,
// against forwarded plus dead-lettered by processing, with duplicates apart.
//
// Ingestion counts the events it acknowledged (202). Processing counts the offsets it
// forwarded or dead-lettered, as ranges, so that an event read twice (after a rebalance
// or a crash before the commit) is a duplicate, not a second event; and the offsets of
// an event id it has already handled at another offset (a retried produce) as copies.
//
// Every replica counts under an incarnation of its own (its replica id and a random
// suffix), so a restarted replica adds to what it published before instead of
// overwriting it, and the latest record of a key always holds that incarnation's whole
// count.
package audit

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/segmentio/kafka-go"
)

// Tiers of the pipeline.
const (
	Ingestion  = "ingestion"
	Processing = "processing"
)

// MaxRanges bounds the ranges of offsets one count keeps, so that its record stays far
// below a broker's message size whatever the offsets: a bucket's offsets interleave with
// its neighbours' only as far as the ingestion replicas' clocks disagree.
const MaxRanges = 10000

// DefaultWidth is a bucket's width.
const DefaultWidth = time.Minute

// retention is how long the audit topic keeps a record: the longest window
// `throttlectl audit --since` can look back over.
const retention = 7 * 24 * time.Hour

// TopicConfig is how the audit topic is created (cluster.CreateTopics): compacted, so
// the latest count of a key wins, and deleted after a week, so that it does not grow
// with every bucket for ever. One partition: its records are few.
func TopicConfig(name string, replication, minInsync int) kafka.TopicConfig {
	return kafka.TopicConfig{Topic: name, NumPartitions: 1, ReplicationFactor: replication, ConfigEntries: []kafka.ConfigEntry{
		{ConfigName: "cleanup.policy", ConfigValue: "compact,delete"},
		{ConfigName: "retention.ms", ConfigValue: strconv.FormatInt(retention.Milliseconds(), 10)},
		{ConfigName: "min.insync.replicas", ConfigValue: strconv.Itoa(minInsync)},
	}}
}

// Incarnation names one run of a replica: its id and a random suffix.
func Incarnation(replica string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return replica + "." + hex.EncodeToString(b[:])
}

// Key is what an audit record counts: one incarnation's events of one partition and
// bucket. A Key with Partition -1 is the incarnation's beat, which says it is alive, or
// that it stopped cleanly.
type Key struct {
	Tier        string
	Incarnation string
	Partition   int
	Bucket      int64 // the bucket's start, in Unix milliseconds
}

// beat reports whether k is an incarnation's beat.
func (k Key) beat() bool { return k.Partition < 0 }

// String is the record's key: tier/incarnation/partition/bucket, or tier/incarnation for
// a beat. The incarnation is path-escaped, so it may hold any character.
func (k Key) String() string {
	s := k.Tier + "/" + url.PathEscape(k.Incarnation)
	if k.beat() {
		return s
	}
	return s + "/" + strconv.Itoa(k.Partition) + "/" + strconv.FormatInt(k.Bucket, 10)
}

// ParseKey reads a record's key.
func ParseKey(b []byte) (Key, error) {
	parts := strings.Split(string(b), "/")
	bad := func(why string) (Key, error) { return Key{}, fmt.Errorf("audit key %q: %s", b, why) }
	if len(parts) != 2 && len(parts) != 4 {
		return bad("want tier/incarnation/partition/bucket or tier/incarnation")
	}
	if parts[0] != Ingestion && parts[0] != Processing {
		return bad("unknown tier")
	}
	inc, err := url.PathUnescape(parts[1])
	if err != nil || inc == "" {
		return bad("bad incarnation")
	}
	k := Key{Tier: parts[0], Incarnation: inc, Partition: -1}
	if len(parts) == 2 {
		return k, nil
	}
	if k.Partition, err = strconv.Atoi(parts[2]); err != nil || k.Partition < 0 || parts[2] != strconv.Itoa(k.Partition) {
		return bad("bad partition")
	}
	if k.Bucket, err = strconv.ParseInt(parts[3], 10, 64); err != nil || k.Bucket < 0 || parts[3] != strconv.FormatInt(k.Bucket, 10) {
		return bad("bad bucket")
	}
	return k, nil
}

// Value is a record's value. A count: the bucket's width and what the incarnation saw
// in it so far. A beat: when it was written, how often beats come, and whether the
// incarnation stopped cleanly (Final), having published everything it counted.
type Value struct {
	At    int64 `json:"at"` // written, Unix milliseconds
	Width int64 `json:"width_ms,omitempty"`
	// Accepted: ingestion's events acknowledged.
	Accepted int64 `json:"accepted,omitempty"`
	// Forwarded and DeadLettered: the offsets processing handled.
	Forwarded    Ranges `json:"forwarded,omitempty"`
	DeadLettered Ranges `json:"dead_lettered,omitempty"`
	// Copies: offsets of Forwarded and DeadLettered whose event id the reader had
	// already handled at another offset: a produce of ingestion's retried after the
	// broker had written it.
	Copies Ranges `json:"copies,omitempty"`
	// Unranged: offsets handled beyond MaxRanges, counted without their offsets, so
	// without telling a second reading of them from a first.
	Unranged int64 `json:"unranged,omitempty"`
	// Again: handlings of an offset already in Forwarded or DeadLettered: the reader
	// read it again, as after a rebalance that gave it back the partition before a commit.
	Again int64 `json:"again,omitempty"`
	// Every and Final: a beat's.
	Every int64 `json:"every_ms,omitempty"`
	Final bool  `json:"final,omitempty"`
}

// Encode is v as the record's value.
func (v Value) Encode() []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("audit: encode %+v: %v", v, err)) // plain numbers and bools only
	}
	return b
}

// Decode reads a record's value for key k and checks it.
func Decode(k Key, b []byte) (Value, error) {
	var v Value
	if err := json.Unmarshal(b, &v); err != nil {
		return Value{}, fmt.Errorf("audit value of %s: %w", k, err)
	}
	bad := func(why string) (Value, error) { return Value{}, fmt.Errorf("audit value of %s: %s", k, why) }
	switch {
	case v.At <= 0:
		return bad("no time")
	case k.beat() && (v.Every <= 0 || v.Width != 0 || v.Accepted != 0 || v.Forwarded != nil || v.DeadLettered != nil):
		return bad("a beat holds a time, an interval and a flag only")
	case !k.beat() && (v.Width <= 0 || k.Bucket%v.Width != 0 || v.Every != 0 || v.Final):
		return bad("a count needs a width its bucket is a multiple of")
	case v.Accepted < 0 || v.Unranged < 0 || v.Again < 0 || !v.Forwarded.valid() || !v.DeadLettered.valid() || !v.Copies.valid():
		return bad("negative count or unordered offsets")
	case k.Tier == Ingestion && (v.Forwarded != nil || v.DeadLettered != nil || v.Copies != nil || v.Unranged != 0 || v.Again != 0):
		return bad("ingestion counts accepted events only")
	case k.Tier == Processing && v.Accepted != 0:
		return bad("processing counts offsets only")
	}
	return v, nil
}

// parse reads one record of the audit topic; a tombstone has a nil value.
func parse(msg kafka.Message) (Key, *Value, error) {
	k, err := ParseKey(msg.Key)
	if err != nil {
		return Key{}, nil, err
	}
	if msg.Value == nil {
		return k, nil, nil
	}
	v, err := Decode(k, msg.Value)
	if err != nil {
		return Key{}, nil, err
	}
	return k, &v, nil
}

// bucketOf is the start, in Unix milliseconds, of the bucket of width that holds t.
func bucketOf(t time.Time, width int64) int64 {
	ms := max(t.UnixMilli(), 0) // a record without a timestamp counts in the first bucket
	return ms - ms%width
}
