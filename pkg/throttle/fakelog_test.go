package throttle_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// fakeLog answers Fetch and ListOffsets for one topic from batches built by hand, the way
// Apache Kafka serves a compacted log (KAFKA-NOTES, "What a real broker serves"): a
// batch keeps its offset range when the cleaner empties it, a fetch returns the batches
// of one segment from the one whose range holds the offset, read committed lists the
// aborted transactions, and a position outside the log gets OFFSET_OUT_OF_RANGE. kfake
// still answers everything else (metadata, topic creation) for the topic it created.
type fakeLog struct {
	topic string

	mu    sync.Mutex
	parts []*fakePart
	wake  chan struct{} // closed and replaced on every append: wakes waiting fetches

	failPermille atomic.Int32 // share of this topic's requests answered by dropping the connection
	rng          *rand.Rand   // guarded by mu
}

type fakePart struct {
	segments [][]*fakeBatch // the last is the active segment
	logStart int64
	next     int64 // log end offset; also the high watermark and last stable offset
	aborted  []fakeTxn
}

type fakeTxn struct{ producer, first, marker int64 }

type fakeBatch struct {
	base, last int64
	records    []fakeRec
	control    bool // a transaction marker
	abort      bool // with control: an abort marker
	producer   int64
	txn        bool
	codec      kafka.Compression // records compressed as another producer may send them
}

type fakeRec struct {
	off     int64
	key     []byte
	value   []byte // nil: a tombstone
	headers []kmsg.Header
}

func newFakeLog(c *kfake.Cluster, topic string, partitions int, seed uint64) *fakeLog {
	l := &fakeLog{topic: topic, wake: make(chan struct{}), rng: rand.New(rand.NewPCG(seed, 7))}
	for range partitions {
		l.parts = append(l.parts, &fakePart{segments: [][]*fakeBatch{nil}})
	}
	m := routeFakeLogs(c)
	fakeRoutesMu.Lock()
	m[topic] = l
	fakeRoutesMu.Unlock()
	return l
}

// close stops serving the log and deletes its topic, so a long run of cases does not
// make every metadata answer longer.
func (l *fakeLog) close(c *kfake.Cluster, brokers []string) {
	fakeRoutesMu.Lock()
	delete(fakeRoutes[c], l.topic)
	fakeRoutesMu.Unlock()
	cl := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 5 * time.Second}
	_, _ = cl.DeleteTopics(context.Background(), &kafka.DeleteTopicsRequest{Topics: []string{l.topic}})
}

var (
	fakeRoutesMu sync.Mutex
	fakeRoutes   = map[*kfake.Cluster]map[string]*fakeLog{}
)

// routeFakeLogs returns the cluster's fake logs by topic, installing on first use one
// hook per request kind that hands each request to its topic's log: one hook per log
// would make every request run through all of them, one after another.
func routeFakeLogs(c *kfake.Cluster) map[string]*fakeLog {
	fakeRoutesMu.Lock()
	defer fakeRoutesMu.Unlock()
	if m, ok := fakeRoutes[c]; ok {
		return m
	}
	m := map[string]*fakeLog{}
	fakeRoutes[c] = m
	logOf := func(topic string) *fakeLog {
		fakeRoutesMu.Lock()
		defer fakeRoutesMu.Unlock()
		return m[topic]
	}
	// hook answers a request naming one topic from that topic's fake log.
	hook := func(topicOf func(kmsg.Request) (string, bool), answer func(*fakeLog, kmsg.Request) kmsg.Response) func(kmsg.Request) (kmsg.Response, error, bool) {
		return func(req kmsg.Request) (kmsg.Response, error, bool) {
			c.KeepControl()
			topic, ok := topicOf(req)
			if !ok {
				return nil, nil, false
			}
			l := logOf(topic)
			if l == nil {
				return nil, nil, false
			}
			if l.fail() {
				return nil, errors.New("fake log: connection dropped"), true
			}
			return answer(l, req), nil, true
		}
	}
	c.ControlKey(int16(kmsg.Fetch), hook(
		func(req kmsg.Request) (string, bool) {
			r := req.(*kmsg.FetchRequest)
			return firstTopic(len(r.Topics), func() string { return r.Topics[0].Topic })
		},
		func(l *fakeLog, req kmsg.Request) kmsg.Response { return l.fetch(c, req.(*kmsg.FetchRequest)) }))
	c.ControlKey(int16(kmsg.ListOffsets), hook(
		func(req kmsg.Request) (string, bool) {
			r := req.(*kmsg.ListOffsetsRequest)
			return firstTopic(len(r.Topics), func() string { return r.Topics[0].Topic })
		},
		func(l *fakeLog, req kmsg.Request) kmsg.Response { return l.listOffsets(req.(*kmsg.ListOffsetsRequest)) }))
	return m
}

// firstTopic is the topic of a request that names exactly one.
func firstTopic(n int, name func() string) (string, bool) {
	if n != 1 {
		return "", false
	}
	return name(), true
}

func (l *fakeLog) fail() bool {
	n := l.failPermille.Load()
	if n == 0 {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rng.Int32N(1000) < n
}

// appendBatch writes records (key, value pairs; offsets are assigned) as one batch to
// the active segment. gap leaves offsets at the batch's end that hold no record, as
// after compaction (a compacted tail).
func (l *fakeLog) appendBatch(part int, recs []fakeRec, gap int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.push(l.parts[part], l.batch(l.parts[part], recs, gap))
}

func (l *fakeLog) batch(p *fakePart, recs []fakeRec, gap int64) *fakeBatch {
	b := &fakeBatch{base: p.next, producer: -1}
	for i := range recs {
		r := recs[i]
		r.off = p.next
		p.next++
		b.records = append(b.records, r)
	}
	p.next += gap
	b.last = p.next - 1
	if b.last < b.base { // an empty batch still takes one offset
		p.next = b.base + 1
		b.last = b.base
	}
	return b
}

// appendCompressed is appendBatch with the records compressed with codec.
func (l *fakeLog) appendCompressed(part int, codec kafka.Compression, recs []fakeRec, gap int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.batch(l.parts[part], recs, gap)
	b.codec = codec
	l.push(l.parts[part], b)
}

// appendTxn writes recs as one transactional batch of producer, then its marker, at
// once: a read-committed fetch never sees an open transaction.
func (l *fakeLog) appendTxn(part int, producer int64, recs []fakeRec, commit bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.parts[part]
	b := l.batch(p, recs, 0)
	b.txn, b.producer = true, producer
	m := &fakeBatch{base: p.next, last: p.next, control: true, abort: !commit, producer: producer, txn: true}
	p.next++
	if !commit {
		p.aborted = append(p.aborted, fakeTxn{producer: producer, first: b.base, marker: m.base})
	}
	l.push(p, b)
	l.push(p, m)
}

func (l *fakeLog) push(p *fakePart, b *fakeBatch) {
	seg := &p.segments[len(p.segments)-1]
	*seg = append(*seg, b)
	close(l.wake)
	l.wake = make(chan struct{})
}

// roll starts a new active segment.
func (l *fakeLog) roll(part int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.parts[part]
	if len(p.segments[len(p.segments)-1]) > 0 {
		p.segments = append(p.segments, nil)
	}
}

// compact cleans every segment but the active one as Kafka's cleaner does: a record
// stays only if it is its key's latest in the cleaned part, records of aborted
// transactions go, and batches keep their offset ranges. A batch left with no record is
// dropped unless it is the last of its segment (kept "so that last offset information is
// not lost"), or, when keepEmpty says so, the last of its producer. Tombstones and
// markers whose key has nothing older left may be dropped (delete.retention.ms passed)
// when dropTombstones is set. mergeSegments groups cleaned segments, as a cleaning round
// does.
func (l *fakeLog) compact(part int, keepEmpty func() bool, dropTombstones, mergeSegments bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.parts[part]
	cleaned := p.segments[:len(p.segments)-1]
	latest := map[string]int64{}
	abortedAt := func(b *fakeBatch) bool {
		for _, t := range p.aborted {
			if b.txn && !b.control && b.producer == t.producer && b.base >= t.first && b.base < t.marker {
				return true
			}
		}
		return false
	}
	for _, seg := range cleaned {
		for _, b := range seg {
			if b.control || abortedAt(b) {
				continue
			}
			for _, r := range b.records {
				latest[string(r.key)] = r.off
			}
		}
	}
	for si, seg := range cleaned {
		var out []*fakeBatch
		for bi, b := range seg {
			nb := *b
			nb.records = nil
			if b.control {
				if dropTombstones && l.rng.IntN(2) == 0 && bi != len(seg)-1 {
					// The transaction index forgets an aborted transaction with its
					// marker: its records went in the same round (abortedAt).
					p.aborted = slices.DeleteFunc(p.aborted, func(t fakeTxn) bool { return t.marker == b.base })
					continue
				}
				out = append(out, &nb)
				continue
			}
			if !abortedAt(b) {
				for _, r := range b.records {
					if latest[string(r.key)] != r.off {
						continue
					}
					if r.value == nil && dropTombstones && l.rng.IntN(2) == 0 {
						continue
					}
					nb.records = append(nb.records, r)
				}
			}
			if len(nb.records) == 0 && bi != len(seg)-1 && !keepEmpty() {
				continue
			}
			out = append(out, &nb)
		}
		cleaned[si] = out
	}
	if mergeSegments && len(cleaned) > 1 {
		var merged []*fakeBatch
		for _, seg := range cleaned {
			merged = append(merged, seg...)
		}
		cleaned = [][]*fakeBatch{merged}
	}
	var segs [][]*fakeBatch
	for _, seg := range cleaned {
		if len(seg) > 0 {
			segs = append(segs, seg)
		}
	}
	p.segments = append(segs, p.segments[len(p.segments)-1])
}

// deleteRecords moves the log start to off (retention, DeleteRecords).
func (l *fakeLog) deleteRecords(part int, off int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.deleteRecordsLocked(part, off)
}

// appendBatchDeleting appends a batch and moves the log start to off in one step, so no
// reader sees the batch's records below off.
func (l *fakeLog) appendBatchDeleting(part int, recs []fakeRec, off int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.push(l.parts[part], l.batch(l.parts[part], recs, 0))
	l.deleteRecordsLocked(part, off)
}

func (l *fakeLog) deleteRecordsLocked(part int, off int64) {
	p := l.parts[part]
	p.logStart = off
	for si := range p.segments {
		var keep []*fakeBatch
		for _, b := range p.segments[si] {
			if b.last >= off {
				keep = append(keep, b)
			}
		}
		p.segments[si] = keep
	}
}

func (l *fakeLog) end(part int) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.parts[part].next
}

func (l *fakeLog) fetch(c *kfake.Cluster, r *kmsg.FetchRequest) kmsg.Response {
	resp := r.ResponseKind().(*kmsg.FetchResponse)
	rp := r.Topics[0].Partitions[0]
	l.mu.Lock()
	defer l.mu.Unlock()
	for attempt := 0; ; attempt++ {
		out, wait := l.fetchPartition(rp.Partition, rp.FetchOffset, r.MaxBytes)
		if wait == nil || attempt > 0 || r.MinBytes == 0 || r.MaxWaitMillis <= 0 {
			resp.Topics = []kmsg.FetchResponseTopic{{Topic: l.topic, Partitions: []kmsg.FetchResponseTopicPartition{out}}}
			return resp
		}
		// Nothing yet: wait for an append or MaxWait, as a broker does, without holding
		// the cluster's other requests.
		l.mu.Unlock()
		c.SleepControl(func() {
			select {
			case <-wait:
			case <-time.After(time.Duration(min(r.MaxWaitMillis, 200)) * time.Millisecond):
			}
		})
		l.mu.Lock()
	}
}

// fetchPartition builds one partition's answer; wait is non-nil when it holds no batch.
func (l *fakeLog) fetchPartition(part int32, off int64, maxBytes int32) (kmsg.FetchResponseTopicPartition, chan struct{}) {
	out := kmsg.NewFetchResponseTopicPartition()
	out.Partition = part
	if int(part) >= len(l.parts) {
		out.ErrorCode = 3 // UNKNOWN_TOPIC_OR_PARTITION
		return out, nil
	}
	p := l.parts[part]
	out.HighWatermark, out.LastStableOffset, out.LogStartOffset = p.next, p.next, p.logStart
	if off < p.logStart || off > p.next {
		out.ErrorCode = 1 // OFFSET_OUT_OF_RANGE
		return out, nil
	}
	for _, seg := range p.segments {
		for i, b := range seg {
			if b.last < off {
				continue
			}
			// From the batch that holds off to the end of its segment: a fetch reads one
			// segment. At least one batch, then as many as maxBytes allows.
			var lastOff int64
			for _, b := range seg[i:] {
				enc := b.encode()
				if len(out.RecordBatches) > 0 && len(out.RecordBatches)+len(enc) > int(maxBytes) {
					break
				}
				out.RecordBatches = append(out.RecordBatches, enc...)
				lastOff = b.last
			}
			for _, t := range p.aborted {
				if t.first <= lastOff && t.marker >= off {
					out.AbortedTransactions = append(out.AbortedTransactions,
						kmsg.FetchResponseTopicPartitionAbortedTransaction{ProducerID: t.producer, FirstOffset: t.first})
				}
			}
			return out, nil
		}
	}
	return out, l.wake
}

func (l *fakeLog) listOffsets(r *kmsg.ListOffsetsRequest) kmsg.Response {
	resp := r.ResponseKind().(*kmsg.ListOffsetsResponse)
	l.mu.Lock()
	defer l.mu.Unlock()
	t := kmsg.NewListOffsetsResponseTopic()
	t.Topic = l.topic
	for _, rp := range r.Topics[0].Partitions {
		op := kmsg.NewListOffsetsResponseTopicPartition()
		op.Partition = rp.Partition
		if int(rp.Partition) >= len(l.parts) {
			op.ErrorCode = 3
		} else {
			p := l.parts[rp.Partition]
			op.Offset = p.next
			if rp.Timestamp == -2 {
				op.Offset = p.logStart
			}
		}
		t.Partitions = append(t.Partitions, op)
	}
	resp.Topics = []kmsg.ListOffsetsResponseTopic{t}
	return resp
}

// encode returns the batch in Kafka's v2 format, as a broker stores it.
func (b *fakeBatch) encode() []byte {
	var recs []byte
	for _, r := range b.records {
		kr := kmsg.Record{OffsetDelta: int32(r.off - b.base), Key: r.key, Value: r.value, Headers: r.headers}
		kr.Length = int32(len(kr.AppendTo(nil)) - 1) // the length varint of 0 takes one byte
		recs = append(recs, kr.AppendTo(nil)...)
	}
	nrec := int32(len(b.records))
	if b.control { // key: version 0, type 0 (abort) or 1 (commit); value: version, epoch
		typ := uint16(1)
		if b.abort {
			typ = 0
		}
		kr := kmsg.Record{Key: binary.BigEndian.AppendUint16([]byte{0, 0}, typ), Value: []byte{0, 0, 0, 0, 0, 0}}
		kr.Length = int32(len(kr.AppendTo(nil)) - 1)
		recs, nrec = kr.AppendTo(nil), 1
	}
	var attrs int16
	if b.codec != 0 {
		var buf bytes.Buffer
		w := b.codec.Codec().NewWriter(&buf)
		if _, err := w.Write(recs); err != nil {
			panic(err)
		}
		if err := w.Close(); err != nil {
			panic(err)
		}
		recs, attrs = buf.Bytes(), int16(b.codec)
	}
	if b.txn {
		attrs |= 0x10
	}
	if b.control {
		attrs |= 0x20
	}
	ts := time.Now().UnixMilli()
	rb := kmsg.RecordBatch{
		FirstOffset: b.base, Length: int32(49 + len(recs)), Magic: 2, Attributes: attrs,
		LastOffsetDelta: int32(b.last - b.base), FirstTimestamp: ts, MaxTimestamp: ts,
		ProducerID: b.producer, ProducerEpoch: -1, FirstSequence: -1, NumRecords: nrec, Records: recs,
	}
	if b.txn {
		rb.ProducerEpoch = 0
	}
	raw := rb.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[17:21], crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	return raw
}
