// Command probe is the e2e suite's hands inside the containers' network: a small HTTP
// service that reads a topic from its first offset to its end, writes raw records (for
// poison records and fillers), and changes topic configs, with kafka-go like the
// services.
//
// The suite needs it because a broker that serves containers advertises its network
// alias (kafka:9092), which the test process on the host cannot resolve; the probe sits
// on the network and the test talks to it over a mapped HTTP port. It is a test tool, not
// part of Sluice: it does no authentication and trusts its caller.
//
//	GET  /healthz                     200 when serving
//	GET  /v1/topics/{topic}           every record of every partition, with the offsets
//	POST /v1/topics/{topic}/records   write records as given (JSON array of Record)
//	PUT  /v1/topics/{topic}/configs   set topic configs (JSON object name → value)
//
// Environment: KAFKA_BROKERS (comma-separated, default kafka:9092), PROBE_ADDR (default
// :8099). `probe healthcheck` exits 0 when a probe answers on PROBE_ADDR, for a
// container HEALTHCHECK.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
)

// Record is one record as the probe reads and writes it. Value nil (JSON null) is a
// tombstone; kafka-go reads an empty value as nil too, so never write an empty one.
type Record struct {
	// Partition: nil when writing means the key's partition as the services pick it
	// (murmur2, like the Java client).
	Partition *int      `json:"partition,omitempty"`
	Offset    int64     `json:"offset"`
	Key       []byte    `json:"key"`
	Value     []byte    `json:"value"`
	Headers   []Header  `json:"headers,omitempty"`
	Time      time.Time `json:"time"`
}

// Header is a record header.
type Header struct {
	Key   string `json:"key"`
	Value []byte `json:"value"`
}

// Partition is a partition's offsets when it was read.
type Partition struct {
	Partition int   `json:"partition"`
	Start     int64 `json:"start"` // the log start offset (moves with compaction on kfake)
	End       int64 `json:"end"`   // the next offset to be written
	// Leader, Replicas and ISR are broker ids from the metadata the dump began with.
	Leader   int   `json:"leader"`
	Replicas []int `json:"replicas"`
	ISR      []int `json:"isr"`
}

// Dump is a whole topic.
type Dump struct {
	Topic      string      `json:"topic"`
	Partitions []Partition `json:"partitions"`
	Records    []Record    `json:"records"`
}

func main() {
	addr := env("PROBE_ADDR", ":8099")
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(healthcheck(addr))
	}
	if len(os.Args) > 1 {
		fmt.Fprintf(os.Stderr, "probe: unexpected arguments %q\n", os.Args[1:])
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	p := &probe{brokers: strings.Split(env("KAFKA_BROKERS", "kafka:9092"), ",")}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatalf("probe: listen on %s: %v", addr, err)
	}
	srv := &http.Server{Handler: p.routes(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	log.Printf("probe listening on %s, brokers %v", ln.Addr(), p.brokers)
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("probe: %v", err)
	}
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func healthcheck(addr string) int {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 1
	}
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://127.0.0.1:" + port + "/healthz")
	if err != nil {
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 1
	}
	return 0
}

type probe struct {
	brokers []string
}

func (p *probe) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	// ?records=false: the partitions' offsets, leaders and replicas only.
	mux.HandleFunc("GET /v1/topics/{topic}", func(w http.ResponseWriter, r *http.Request) {
		d, err := p.dump(r.Context(), r.PathValue("topic"), r.URL.Query().Get("records") != "false")
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, d)
	})
	mux.HandleFunc("POST /v1/topics/{topic}/records", func(w http.ResponseWriter, r *http.Request) {
		var recs []Record
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<20)).Decode(&recs); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		if err := p.produce(r.Context(), r.PathValue("topic"), recs); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]int{"written": len(recs)})
	})
	mux.HandleFunc("PUT /v1/topics/{topic}/configs", func(w http.ResponseWriter, r *http.Request) {
		var cfgs map[string]string
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&cfgs); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		if err := p.setConfigs(r.Context(), r.PathValue("topic"), cfgs); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, cfgs)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers 502: the probe itself is fine, the broker is not (or the request
// named something the broker refused).
func writeError(w http.ResponseWriter, err error) {
	log.Printf("probe: %v", err)
	writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
}

// client returns a kafka-go client with a transport of its own, so that no metadata is
// cached between requests (the broker may have restarted, topics may be new).
func (p *probe) client() (*kafka.Client, func()) {
	tr := &kafka.Transport{MetadataTTL: 100 * time.Millisecond, DialTimeout: 5 * time.Second}
	return &kafka.Client{Addr: kafka.TCP(p.brokers...), Timeout: 10 * time.Second, Transport: tr}, tr.CloseIdleConnections
}

// dump reads every partition of topic from its log start offset to the end offset it
// had when the dump began.
func (p *probe) dump(ctx context.Context, topic string, records bool) (Dump, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cl, done := p.client()
	defer done()
	meta, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return Dump{}, fmt.Errorf("metadata of %s: %w", topic, err)
	}
	if len(meta.Topics) != 1 || meta.Topics[0].Error != nil {
		var terr error
		if len(meta.Topics) == 1 {
			terr = meta.Topics[0].Error
		}
		return Dump{}, fmt.Errorf("metadata of %s: %v", topic, terr)
	}
	var reqs []kafka.OffsetRequest
	for _, part := range meta.Topics[0].Partitions {
		reqs = append(reqs, kafka.FirstOffsetOf(part.ID), kafka.LastOffsetOf(part.ID))
	}
	offs, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return Dump{}, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	d := Dump{Topic: topic, Records: []Record{}}
	for _, po := range offs.Topics[topic] {
		if po.Error != nil {
			return Dump{}, fmt.Errorf("list offsets of %s/%d: %w", topic, po.Partition, po.Error)
		}
		part := Partition{Partition: po.Partition, Start: po.FirstOffset, End: po.LastOffset}
		for _, mp := range meta.Topics[0].Partitions {
			if mp.ID == po.Partition {
				part.Leader, part.Replicas, part.ISR = mp.Leader.ID, brokerIDs(mp.Replicas), brokerIDs(mp.Isr)
			}
		}
		d.Partitions = append(d.Partitions, part)
	}
	sort.Slice(d.Partitions, func(i, j int) bool { return d.Partitions[i].Partition < d.Partitions[j].Partition })
	if !records {
		return d, nil
	}
	for _, part := range d.Partitions {
		recs, err := p.readPartition(ctx, topic, part)
		if err != nil {
			return Dump{}, err
		}
		d.Records = append(d.Records, recs...)
	}
	return d, nil
}

// readPartition reads part from its start to its end. Offsets have gaps after
// compaction, so it follows the connection's position, never waits for end-1.
func (p *probe) readPartition(ctx context.Context, topic string, part Partition) ([]Record, error) {
	if part.Start >= part.End {
		return nil, nil
	}
	d := &kafka.Dialer{Timeout: 5 * time.Second}
	// Through whichever broker answers: on a cluster, one may be down.
	var conn *kafka.Conn
	var err error
	for _, b := range p.brokers {
		if conn, err = d.DialLeader(ctx, "tcp", b, topic, part.Partition); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("dial leader of %s/%d: %w", topic, part.Partition, err)
	}
	defer conn.Close()
	if _, err := conn.Seek(part.Start, kafka.SeekAbsolute); err != nil {
		return nil, fmt.Errorf("seek %s/%d to %d: %w", topic, part.Partition, part.Start, err)
	}
	var out []Record
	next := part.Start
	for stalls := 0; next < part.End; {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("read %s/%d at %d of %d: %w", topic, part.Partition, next, part.End, err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		batch := conn.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 200 * time.Millisecond})
		before := next
		for {
			m, err := batch.ReadMessage()
			if err != nil {
				break
			}
			if m.Offset >= part.End {
				continue
			}
			pn := m.Partition
			r := Record{Partition: &pn, Offset: m.Offset, Key: m.Key, Value: m.Value, Time: m.Time.UTC()}
			for _, h := range m.Headers {
				r.Headers = append(r.Headers, Header{Key: h.Key, Value: h.Value})
			}
			out = append(out, r)
		}
		if err := batch.Close(); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read %s/%d at %d: %w", topic, part.Partition, next, err)
		}
		next = max(next, batch.Offset())
		if next == before {
			if stalls++; stalls > 20 {
				return nil, fmt.Errorf("read %s/%d: stuck at offset %d of %d", topic, part.Partition, next, part.End)
			}
			continue
		}
		stalls = 0
	}
	return out, nil
}

func brokerIDs(bs []kafka.Broker) []int {
	ids := make([]int, len(bs))
	for i, b := range bs {
		ids[i] = b.ID
	}
	return ids
}

// produce writes recs synchronously with acks=all, each to the partition it names or,
// without one, to its key's murmur2 partition.
func (p *probe) produce(ctx context.Context, topic string, recs []Record) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tr := &kafka.Transport{MetadataTTL: 100 * time.Millisecond, DialTimeout: 5 * time.Second}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{
		Addr: kafka.TCP(p.brokers...), Topic: topic, Transport: tr,
		RequiredAcks: kafka.RequireAll, Balancer: chosenPartition{}, BatchTimeout: time.Millisecond,
		BatchSize: 1000, BatchBytes: 4 << 20,
		// One attempt: the caller retries, and a retry here could write a record twice.
		MaxAttempts: 1,
	}
	defer w.Close()
	msgs := make([]kafka.Message, len(recs))
	for i, r := range recs {
		m := kafka.Message{Key: r.Key, Value: r.Value, Partition: -1}
		if r.Partition != nil {
			m.Partition = *r.Partition
		}
		for _, h := range r.Headers {
			m.Headers = append(m.Headers, kafka.Header{Key: h.Key, Value: h.Value})
		}
		msgs[i] = m
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("produce %d records to %s: %w", len(msgs), topic, err)
	}
	return nil
}

// chosenPartition sends a message to the partition it names (kafka.Writer otherwise
// ignores Message.Partition), or to its key's murmur2 partition when it names -1.
type chosenPartition struct{}

func (chosenPartition) Balance(msg kafka.Message, partitions ...int) int {
	if msg.Partition < 0 {
		return (&kafka.Murmur2Balancer{}).Balance(msg, partitions...)
	}
	for _, p := range partitions {
		if p == msg.Partition {
			return p
		}
	}
	return partitions[0]
}

// setConfigs sets topic configs, leaving the others as they are.
func (p *probe) setConfigs(ctx context.Context, topic string, cfgs map[string]string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cl, done := p.client()
	defer done()
	res := kafka.IncrementalAlterConfigsRequestResource{ResourceType: kafka.ResourceTypeTopic, ResourceName: topic}
	for name, value := range cfgs {
		res.Configs = append(res.Configs, kafka.IncrementalAlterConfigsRequestConfig{Name: name, Value: value, ConfigOperation: kafka.ConfigOperationSet})
	}
	resp, err := cl.IncrementalAlterConfigs(ctx, &kafka.IncrementalAlterConfigsRequest{Resources: []kafka.IncrementalAlterConfigsRequestResource{res}})
	if err != nil {
		return fmt.Errorf("alter configs of %s: %w", topic, err)
	}
	for _, r := range resp.Resources {
		if r.Error != nil {
			return fmt.Errorf("alter configs of %s: %w", topic, r.Error)
		}
	}
	return nil
}
