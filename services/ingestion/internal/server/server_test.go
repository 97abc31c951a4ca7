package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/follow"
	"github.com/sluice-dev/sluice/services/ingestion/internal/limit"
	"github.com/sluice-dev/sluice/services/ingestion/internal/metrics"
	"github.com/sluice-dev/sluice/services/ingestion/internal/sink"
	"github.com/sluice-dev/sluice/services/platform/event"
)

var t0 = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

// fakeTable is a throttle table held in memory.
type fakeTable struct {
	mu        sync.Mutex
	ready     atomic.Bool
	throttles map[string]throttle.Record
}

func newFakeTable(ready bool, recs ...throttle.Record) *fakeTable {
	t := &fakeTable{throttles: map[string]throttle.Record{}}
	t.ready.Store(ready)
	for _, r := range recs {
		t.set(r)
	}
	return t
}

func (t *fakeTable) set(r throttle.Record) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.throttles[r.Customer] = r
}

func (t *fakeTable) lift(customer string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.throttles, customer)
}

func (t *fakeTable) Ready() bool { return t.ready.Load() }

func (t *fakeTable) Get(c string) (throttle.Record, bool) {
	if !t.Ready() {
		return throttle.Record{}, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.throttles[c]
	return r, ok
}

func (t *fakeTable) Lookup(c string) (throttle.Rule, bool) {
	r, ok := t.Get(c)
	if !ok {
		return throttle.Rule{}, false
	}
	return r.Rule(), true
}

func (t *fakeTable) Active() []throttle.Record {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []throttle.Record
	for _, r := range t.throttles {
		out = append(out, r)
	}
	return out
}

func (t *fakeTable) Stats() throttle.TableStats {
	return throttle.TableStats{Ready: t.Ready(), Fresh: true, Active: len(t.Active()),
		Partitions: []follow.Progress{{Partition: 0, Position: 7, End: 7, HighWatermark: 9, Lag: 2, CaughtUp: true, Waiting: -1}}}
}

type fakeFleet struct{ alive atomic.Int64 }

func (f *fakeFleet) Size() (int, bool) {
	n := f.alive.Load()
	return int(n), n > 0
}

// recorder is a Kafka writer that keeps what it is given; while blocked it holds every
// write, like a broker that does not answer.
//
// Like kafka.Writer, it copies what it writes and keeps no reference to msgs once it has
// returned nil; a call that fails keeps them (held), as kafka-go's batch may still hold
// a message its caller stopped waiting for.
type recorder struct {
	mu      sync.Mutex
	msgs    []kafka.Message
	held    []kafka.Message
	blocked chan struct{} // nil: answer at once
}

func (r *recorder) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	r.mu.Lock()
	b := r.blocked
	r.mu.Unlock()
	if b != nil {
		select {
		case <-b:
		case <-ctx.Done():
			r.mu.Lock()
			r.held = append(r.held, msgs...)
			r.mu.Unlock()
			return ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range msgs {
		m.Key, m.Value = bytes.Clone(m.Key), bytes.Clone(m.Value)
		r.msgs = append(r.msgs, m)
	}
	return nil
}

func (r *recorder) written() []kafka.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]kafka.Message(nil), r.msgs...)
}

type env struct {
	t       *testing.T
	table   *fakeTable
	fleet   *fakeFleet
	kafka   *recorder
	sink    *sink.Sink
	server  *Server
	metrics *metrics.Metrics
	http    *httptest.Server
	now     atomic.Pointer[time.Time]
}

type options struct {
	keys    map[string]string
	maxBody int64
	buffer  int
	timeout time.Duration
	ready   bool
	// maxEvent bounds one encoded event (the sink's MaxMessageBytes).
	maxEvent int
}

func newEnv(t *testing.T, o options, recs ...throttle.Record) *env {
	t.Helper()
	if o.buffer == 0 {
		o.buffer = 1000
	}
	e := &env{t: t, table: newFakeTable(o.ready, recs...), fleet: &fakeFleet{}, kafka: &recorder{}, metrics: metrics.New()}
	e.fleet.alive.Store(1)
	e.setNow(t0)
	e.sink = sink.New(e.kafka, sink.Config{Buffer: o.buffer, Timeout: o.timeout, MaxMessageBytes: o.maxEvent})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = e.sink.Run(ctx) }()
	e.server = New(Config{Replica: "replica-1", MaxBodyBytes: o.maxBody, Keys: o.keys, Clock: e.clock},
		e.table, limit.NewEnforcer(e.table, e.fleet, limit.NewLimiter()), e.fleet, e.sink, e.metrics)
	e.http = httptest.NewServer(e.server.Handler())
	t.Cleanup(func() {
		e.kafka.mu.Lock()
		if e.kafka.blocked != nil {
			close(e.kafka.blocked)
			e.kafka.blocked = nil
		}
		e.kafka.mu.Unlock()
		e.http.Close()
		cancel()
		<-done
	})
	return e
}

func (e *env) clock() time.Time        { return *e.now.Load() }
func (e *env) setNow(t time.Time)      { e.now.Store(&t) }
func (e *env) advance(d time.Duration) { e.setNow(e.clock().Add(d)) }

type response struct {
	status int
	header http.Header
	body   string
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(r.body), &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.body, err)
	}
	return m
}

func (e *env) do(method, path, body string, header ...string) response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.http.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := e.http.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

func (e *env) post(body string, header ...string) response {
	e.t.Helper()
	return e.do(http.MethodPost, "/v1/events", body, header...)
}

// counter reads a decision counter from the registry.
func (e *env) counter(name, result string) float64 {
	e.t.Helper()
	mfs, err := e.metrics.Registry.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func rec(customer string, limit int64, window time.Duration, mode throttle.Mode) throttle.Record {
	return throttle.Record{ID: customer + "-th1", Customer: customer, Limit: limit, Window: window, Mode: mode,
		CreatedAt: t0.Add(-time.Minute), ExpiresAt: t0.Add(time.Hour), SetBy: "test",
		Reason: throttle.Reason{Kind: throttle.ReasonManual, Note: "flooding"}}
}

// TestThrottleForCenturiesSaysSo: a limit-0 throttle that expires after the year 2262
// (past the largest time.Duration from now) tells the client to retry when it ends, in
// seconds, not after one second: the duration saturates instead of wrapping.
func TestThrottleForCenturiesSaysSo(t *testing.T) {
	r := rec("forever", 0, time.Minute, throttle.ModeEnforce)
	r.ExpiresAt = time.Date(2500, 1, 1, 0, 0, 0, 0, time.UTC)
	e := newEnv(t, options{ready: true}, r)
	got := e.post(`{"customer":"forever"}`)
	if got.status != http.StatusTooManyRequests {
		t.Fatalf("status %d, want 429", got.status)
	}
	const most = "9223372037" // the largest Duration, in seconds rounded up
	if ra := got.header.Get("Retry-After"); ra != most {
		t.Errorf("Retry-After %q, want %s", ra, most)
	}
	if rl := got.header.Get("RateLimit"); rl != `"default";r=0;t=`+most {
		t.Errorf("RateLimit %q, want t=%s", rl, most)
	}
}

func TestThrottleSetRejectsAfterLimitWithHeaders(t *testing.T) {
	e := newEnv(t, options{ready: true}, rec("acme", 20, time.Minute, throttle.ModeEnforce))
	for i := range 20 {
		r := e.post(`{"customer":"acme","id":"e` + fmt.Sprint(i) + `","payload":{"n":1}}`)
		if r.status != http.StatusAccepted {
			t.Fatalf("event %d: status %d (%s), want 202", i+1, r.status, r.body)
		}
		if got, want := r.header.Get("RateLimit-Policy"), `"default";q=20;w=60`; got != want {
			t.Fatalf("event %d: RateLimit-Policy %q, want %q", i+1, got, want)
		}
		// Each event pushes the bucket's refill 3s further: t is when it is full again.
		if got, want := r.header.Get("RateLimit"), fmt.Sprintf(`"default";r=%d;t=%d`, 19-i, 3*(i+1)); got != want {
			t.Fatalf("event %d: RateLimit %q, want %q", i+1, got, want)
		}
		if r.body != `{"accepted":1}`+"\n" {
			t.Fatalf("event %d: body %q, want {\"accepted\":1}", i+1, r.body)
		}
	}
	r := e.post(`{"customer":"acme"}`)
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("21st event: status %d, want 429", r.status)
	}
	for h, want := range map[string]string{
		"Retry-After":      "3",
		"RateLimit-Policy": `"default";q=20;w=60`,
		"RateLimit":        `"default";r=0;t=60`,
		"Content-Type":     "application/json",
	} {
		if got := r.header.Get(h); got != want {
			t.Errorf("21st event: %s %q, want %q", h, got, want)
		}
	}
	if msg, _ := r.json(t)["error"].(string); !strings.Contains(msg, "throttled") {
		t.Errorf("21st event: error %q, want it to say throttled", msg)
	}
	if got := len(e.kafka.written()); got != 20 {
		t.Fatalf("%d events written, want 20", got)
	}
	if a, rj := e.counter("sluice_ingestion_decisions_total", "accepted"), e.counter("sluice_ingestion_decisions_total", "rejected"); a != 20 || rj != 1 {
		t.Fatalf("decisions: accepted %v rejected %v, want 20 and 1", a, rj)
	}

	// 3s later exactly one more event fits.
	e.advance(3 * time.Second)
	if r := e.post(`{"customer":"acme"}`); r.status != http.StatusAccepted {
		t.Fatalf("3s later: status %d, want 202", r.status)
	}
	if r := e.post(`{"customer":"acme"}`); r.status != http.StatusTooManyRequests {
		t.Fatalf("3s later, second event: status %d, want 429", r.status)
	}

	// Other customers are not limited and get no RateLimit fields.
	r = e.post(`{"customer":"other"}`)
	if r.status != http.StatusAccepted || r.header.Get("RateLimit") != "" {
		t.Fatalf("unthrottled customer: status %d RateLimit %q, want 202 and none", r.status, r.header.Get("RateLimit"))
	}
}

func TestLiftedThrottleAccepts(t *testing.T) {
	e := newEnv(t, options{ready: true}, rec("acme", 1, time.Minute, throttle.ModeEnforce))
	e.post(`{"customer":"acme"}`)
	if r := e.post(`{"customer":"acme"}`); r.status != http.StatusTooManyRequests {
		t.Fatalf("over the limit: status %d, want 429", r.status)
	}
	e.table.lift("acme")
	for i := range 5 {
		r := e.post(`{"customer":"acme"}`)
		if r.status != http.StatusAccepted || r.header.Get("RateLimit") != "" {
			t.Fatalf("lifted, event %d: status %d RateLimit %q, want 202 without RateLimit", i, r.status, r.header.Get("RateLimit"))
		}
	}
}

func TestNewThrottleStartsFresh(t *testing.T) {
	e := newEnv(t, options{ready: true}, rec("acme", 1, time.Minute, throttle.ModeEnforce))
	e.post(`{"customer":"acme"}`)
	if r := e.post(`{"customer":"acme"}`); r.status != http.StatusTooManyRequests {
		t.Fatalf("over the limit: status %d, want 429", r.status)
	}
	next := rec("acme", 1, time.Minute, throttle.ModeEnforce)
	next.ID = "acme-th2"
	e.table.set(next)
	if r := e.post(`{"customer":"acme"}`); r.status != http.StatusAccepted {
		t.Fatalf("a new throttle (new id): status %d, want 202 (fresh state)", r.status)
	}
}

func TestShadowModeAcceptsAndCounts(t *testing.T) {
	e := newEnv(t, options{ready: true}, rec("acme", 2, time.Minute, throttle.ModeShadow))
	for i := range 5 {
		r := e.post(`{"customer":"acme"}`)
		if r.status != http.StatusAccepted {
			t.Fatalf("event %d: status %d, want 202 (shadow mode never rejects)", i+1, r.status)
		}
		if r.header.Get("RateLimit") != "" || r.header.Get("Retry-After") != "" {
			t.Fatalf("event %d: shadow mode sent RateLimit %q Retry-After %q, want none", i+1, r.header.Get("RateLimit"), r.header.Get("Retry-After"))
		}
	}
	if got := len(e.kafka.written()); got != 5 {
		t.Fatalf("%d events written, want 5", got)
	}
	if a, s := e.counter("sluice_ingestion_decisions_total", "accepted"), e.counter("sluice_ingestion_decisions_total", "shadow_rejected"); a != 2 || s != 3 {
		t.Fatalf("accepted %v shadow_rejected %v, want 2 and 3", a, s)
	}
}

func TestLimitZeroRefusesAll(t *testing.T) {
	e := newEnv(t, options{ready: true}, rec("acme", 0, time.Minute, throttle.ModeEnforce))
	r := e.post(`{"customer":"acme"}`)
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("status %d, want 429", r.status)
	}
	// Nothing gets in until the throttle expires, an hour from now.
	if got := r.header.Get("Retry-After"); got != "3600" {
		t.Errorf("Retry-After %q, want 3600 (until the throttle expires)", got)
	}
	if got := r.header.Get("RateLimit-Policy"); got != `"default";q=0;w=60` {
		t.Errorf("RateLimit-Policy %q, want q=0", got)
	}
}

func TestBatchCostsItsSizeAllOrNothing(t *testing.T) {
	e := newEnv(t, options{ready: true}, rec("acme", 5, time.Minute, throttle.ModeEnforce))
	batch := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = fmt.Sprintf(`{"customer":"acme","id":"b%d"}`, i)
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	if r := e.post(batch(3)); r.status != http.StatusAccepted || r.body != `{"accepted":3}`+"\n" {
		t.Fatalf("3 of 5: status %d body %q, want 202 accepted 3", r.status, r.body)
	}
	if r := e.post(batch(3)); r.status != http.StatusTooManyRequests {
		t.Fatalf("3 more with 2 left: status %d, want 429 (all or nothing)", r.status)
	}
	if r := e.post(batch(2)); r.status != http.StatusAccepted {
		t.Fatalf("2 with 2 left: status %d, want 202", r.status)
	}
	if got := len(e.kafka.written()); got != 5 {
		t.Fatalf("%d events written, want 5", got)
	}
	r := e.post(batch(6))
	if r.status != http.StatusTooManyRequests || !strings.Contains(r.body, "split") {
		t.Fatalf("6 events against a quota of 5: status %d body %s, want 429 saying split it", r.status, r.body)
	}
}

func TestFleetShareInHeaders(t *testing.T) {
	e := newEnv(t, options{ready: true}, rec("acme", 20, time.Minute, throttle.ModeEnforce))
	for _, tt := range []struct {
		alive int64
		want  string
	}{
		{1, `"default";q=20;w=60`},
		{2, `"default";q=10;w=60`},
		{3, `"default";q=7;w=60`},
		{0, `"default";q=20;w=60`}, // unknown: full limit
	} {
		e.fleet.alive.Store(tt.alive)
		e.advance(time.Hour / 2) // a full bucket each time
		e.table.set(func() throttle.Record {
			r := rec("acme", 20, time.Minute, throttle.ModeEnforce)
			r.ExpiresAt = e.clock().Add(time.Hour)
			return r
		}())
		r := e.post(`{"customer":"acme"}`)
		if got := r.header.Get("RateLimit-Policy"); got != tt.want {
			t.Errorf("%d alive: RateLimit-Policy %q, want %q", tt.alive, got, tt.want)
		}
	}
}

func TestNotReadyRefusesWith503(t *testing.T) {
	e := newEnv(t, options{ready: false}, rec("acme", 20, time.Minute, throttle.ModeEnforce))
	for _, c := range []string{"acme", "other"} {
		r := e.post(`{"customer":"` + c + `"}`)
		if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "1" {
			t.Fatalf("%s before ready: status %d Retry-After %q, want 503 and 1", c, r.status, r.header.Get("Retry-After"))
		}
	}
	if r := e.do(http.MethodGet, "/readyz", ""); r.status != http.StatusServiceUnavailable {
		t.Fatalf("readyz before ready: %d, want 503", r.status)
	}
	if r := e.do(http.MethodGet, "/healthz", ""); r.status != http.StatusOK {
		t.Fatalf("healthz before ready: %d, want 200", r.status)
	}
	if got := len(e.kafka.written()); got != 0 {
		t.Fatalf("%d events written before ready, want 0", got)
	}
	if n := e.counter("sluice_ingestion_decisions_total", "not_ready"); n != 2 {
		t.Fatalf("not_ready decisions %v, want 2", n)
	}

	e.table.ready.Store(true)
	if r := e.do(http.MethodGet, "/readyz", ""); r.status != http.StatusOK {
		t.Fatalf("readyz once ready: %d, want 200", r.status)
	}
	if r := e.post(`{"customer":"acme"}`); r.status != http.StatusAccepted {
		t.Fatalf("once ready: %d, want 202", r.status)
	}
}

func TestDrainRefusesNewEvents(t *testing.T) {
	e := newEnv(t, options{ready: true})
	e.server.Drain()
	if r := e.do(http.MethodGet, "/readyz", ""); r.status != http.StatusServiceUnavailable {
		t.Fatalf("readyz while draining: %d, want 503", r.status)
	}
	if r := e.post(`{"customer":"acme"}`); r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("event while draining: %d, want 503 with Retry-After", r.status)
	}
}

func TestBufferFullRefusesWith503AndRefunds(t *testing.T) {
	e := newEnv(t, options{ready: true, buffer: 3, timeout: time.Minute}, rec("acme", 3, time.Minute, throttle.ModeEnforce))
	e.kafka.blocked = make(chan struct{}) // the broker stops answering

	held := make(chan response, 3)
	for i := range 3 {
		go func() { held <- e.post(fmt.Sprintf(`{"customer":"other","id":"h%d"}`, i)) }()
	}
	for e.sink.Buffered() < 3 {
		time.Sleep(time.Millisecond)
	}
	r := e.post(`{"customer":"acme","id":"x"}`)
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "1" {
		t.Fatalf("buffer full: status %d Retry-After %q, want 503 and 1", r.status, r.header.Get("Retry-After"))
	}
	if n := e.counter("sluice_ingestion_decisions_total", "overloaded"); n != 1 {
		t.Fatalf("overloaded decisions %v, want 1", n)
	}

	e.kafka.mu.Lock()
	close(e.kafka.blocked) // the broker is back
	e.kafka.blocked = nil
	e.kafka.mu.Unlock()
	for range 3 {
		if r := <-held; r.status != http.StatusAccepted {
			t.Fatalf("held request: %d, want 202 once the broker answers", r.status)
		}
	}
	// The refused request did not use acme's quota: all 3 events still fit.
	if r := e.post(`[{"customer":"acme"},{"customer":"acme"},{"customer":"acme"}]`); r.status != http.StatusAccepted {
		t.Fatalf("after a 503, the full quota: status %d, want 202", r.status)
	}
	for _, m := range e.kafka.written() {
		if ev, _ := event.Decode(m.Value); ev.ID == "x" {
			t.Fatal("the refused event was written")
		}
	}
}

func TestEventsAreEncodedKeyedByCustomer(t *testing.T) {
	e := newEnv(t, options{ready: true})
	r := e.post(`[{"customer":"acme","id":"a1","payload":{"k":[1,2]}},{"customer":"acme","payload":"x"},{"customer":"acme","payload":null}]`)
	if r.status != http.StatusAccepted {
		t.Fatalf("status %d %s, want 202", r.status, r.body)
	}
	got := e.kafka.written()
	if len(got) != 3 {
		t.Fatalf("%d messages, want 3", len(got))
	}
	wantPayloads := []string{`{"k":[1,2]}`, `"x"`, ``}
	for i, m := range got {
		if string(m.Key) != "acme" {
			t.Errorf("message %d: key %q, want acme", i, m.Key)
		}
		ev, err := event.Decode(m.Value)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !ev.IngestedAt.Equal(t0) || ev.Customer != "acme" || string(ev.Payload) != wantPayloads[i] {
			t.Errorf("message %d: got %+v, want customer acme, ingested at %s, payload %s", i, ev, t0, wantPayloads[i])
		}
	}
	if ev, _ := event.Decode(got[0].Value); ev.ID != "a1" {
		t.Errorf("id %q, want a1", ev.ID)
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, options{ready: true, maxBody: 1024})
	tests := []struct {
		name   string
		body   string
		status int
		field  string
		msg    string // part of the error
	}{
		{"too large", `{"customer":"acme","payload":"` + strings.Repeat("x", 2000) + `"}`, 413, "", "larger than 1024"},
		{"empty body", ``, 400, "", "empty"},
		{"whitespace", " \n ", 400, "", "empty"},
		{"malformed", `{"customer":`, 400, "", "malformed"},
		{"not an object", `"acme"`, 400, "", "not a JSON object or array"},
		{"number", `42`, 400, "", "not a JSON object or array"},
		{"trailing data", `{"customer":"acme"} {}`, 400, "", "after the JSON value"},
		{"missing customer", `{"id":"x"}`, 400, "customer", "missing"},
		{"empty customer", `{"customer":""}`, 400, "customer", "missing"},
		{"customer not a string", `{"customer":7}`, 400, "customer", "number"},
		{"control character", `{"customer":"ac\u0007me"}`, 400, "customer", "control character"},
		{"too long customer", `{"customer":"` + strings.Repeat("c", 257) + `"}`, 400, "customer", "256"},
		{"invalid utf-8", "{\"customer\":\"ac\xffme\"}", 400, "", "UTF-8"},
		{"unknown field", `{"customer":"acme","ingested_at":"2020-01-01T00:00:00Z"}`, 400, "ingested_at", "unknown field"},
		{"empty array", `[]`, 400, "", "empty"},
		{"mixed customers", `[{"customer":"acme"},{"customer":"other"}]`, 400, "[1].customer", "one customer"},
		{"missing customer in array", `[{"customer":"acme"},{}]`, 400, "[1].customer", "missing"},
		{"array of non-objects", `[1,2]`, 400, "", "JSON number"},
		{"bad id", `{"customer":"acme","id":"a\u0000b"}`, 400, "id", "control character"},
		{"long id", `{"customer":"acme","id":"` + strings.Repeat("i", 257) + `"}`, 400, "id", "256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.post(tt.body)
			if r.status != tt.status {
				t.Fatalf("status %d (%s), want %d", r.status, r.body, tt.status)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q, want application/json", ct)
			}
			m := r.json(t)
			field, _ := m["field"].(string)
			msg, _ := m["error"].(string)
			if field != tt.field {
				t.Errorf("field %q, want %q (error %q)", field, tt.field, msg)
			}
			if !strings.Contains(msg, tt.msg) {
				t.Errorf("error %q, want it to contain %q", msg, tt.msg)
			}
		})
	}
	if got := len(e.kafka.written()); got != 0 {
		t.Fatalf("%d events written from bad requests, want 0", got)
	}
}

func TestUnknownPathAndWrongMethod(t *testing.T) {
	e := newEnv(t, options{ready: true})
	tests := []struct {
		method, path string
		status       int
		allow        string
	}{
		{http.MethodGet, "/nope", 404, ""},
		{http.MethodPost, "/v2/events", 404, ""},
		{http.MethodGet, "/v1/events", 405, "POST"},
		{http.MethodPut, "/v1/events", 405, "POST"},
		{http.MethodPost, "/v1/throttles", 405, "GET, HEAD"},
		{http.MethodDelete, "/v1/throttles/acme", 405, "GET, HEAD"},
		{http.MethodPost, "/healthz", 405, "GET, HEAD"},
		{http.MethodPost, "/readyz", 405, "GET, HEAD"},
		{http.MethodPost, "/metrics", 405, "GET, HEAD"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := e.do(tt.method, tt.path, "")
			if r.status != tt.status {
				t.Fatalf("status %d, want %d", r.status, tt.status)
			}
			if r.header.Get("Allow") != tt.allow {
				t.Errorf("Allow %q, want %q", r.header.Get("Allow"), tt.allow)
			}
			if _, ok := r.json(t)["error"].(string); !ok {
				t.Errorf("body %q has no JSON error", r.body)
			}
		})
	}
}

func TestAPIKeys(t *testing.T) {
	e := newEnv(t, options{ready: true, keys: map[string]string{"k-acme": "acme", "k-other": "other"}},
		rec("acme", 100, time.Minute, throttle.ModeEnforce), rec("other", 100, time.Minute, throttle.ModeEnforce))
	tests := []struct {
		name   string
		body   string
		header []string
		status int
	}{
		{"no key", `{"customer":"acme"}`, nil, 401},
		{"unknown key", `{"customer":"acme"}`, []string{"Authorization", "Bearer nope"}, 401},
		{"wrong scheme", `{"customer":"acme"}`, []string{"Authorization", "Basic k-acme"}, 401},
		{"bearer", `{"customer":"acme"}`, []string{"Authorization", "Bearer k-acme"}, 202},
		{"x-api-key", `{"customer":"acme"}`, []string{"X-API-Key", "k-acme"}, 202},
		{"customer from the key", `{"payload":1}`, []string{"X-API-Key", "k-acme"}, 202},
		{"array, customer from the key", `[{},{"customer":"acme"}]`, []string{"X-API-Key", "k-acme"}, 202},
		{"another customer", `{"customer":"other"}`, []string{"X-API-Key", "k-acme"}, 403},
		{"another customer in an array", `[{"customer":"acme"},{"customer":"other"}]`, []string{"X-API-Key", "k-acme"}, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.post(tt.body, tt.header...)
			if r.status != tt.status {
				t.Fatalf("status %d (%s), want %d", r.status, r.body, tt.status)
			}
			if tt.status == 401 && r.header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
	for _, m := range e.kafka.written() {
		if string(m.Key) != "acme" {
			t.Fatalf("written under key %q, want only acme", m.Key)
		}
	}
	// Views: a key sees only its own customer.
	if r := e.do(http.MethodGet, "/v1/throttles", ""); r.status != 401 {
		t.Fatalf("list without a key: %d, want 401", r.status)
	}
	r := e.do(http.MethodGet, "/v1/throttles", "", "X-API-Key", "k-acme")
	if list, _ := r.json(t)["throttles"].([]any); r.status != 200 || len(list) != 1 {
		t.Fatalf("list with acme's key: status %d, %d throttles, want 200 and 1", r.status, len(list))
	}
	if r := e.do(http.MethodGet, "/v1/throttles/other", "", "X-API-Key", "k-acme"); r.status != 403 {
		t.Fatalf("another customer's throttle: %d, want 403", r.status)
	}
}

func TestThrottleViews(t *testing.T) {
	e := newEnv(t, options{ready: false}, rec("acme", 20, time.Minute, throttle.ModeShadow))
	if r := e.do(http.MethodGet, "/v1/throttles/acme", ""); r.status != http.StatusServiceUnavailable {
		t.Fatalf("one throttle before ready: %d, want 503", r.status)
	}
	r := e.do(http.MethodGet, "/v1/throttles", "")
	if m := r.json(t); r.status != 200 || m["ready"] != false {
		t.Fatalf("list before ready: status %d ready %v, want 200 and false", r.status, m["ready"])
	}

	e.table.ready.Store(true)
	e.fleet.alive.Store(2)
	r = e.do(http.MethodGet, "/v1/throttles", "")
	var list struct {
		Replica string `json:"replica"`
		Ready   bool   `json:"ready"`
		Fresh   bool   `json:"fresh"`
		Fleet   struct {
			Alive int
			Known bool
		}
		Partitions []struct {
			Partition int   `json:"partition"`
			Lag       int64 `json:"lag"`
		} `json:"partitions"`
		Throttles []struct {
			ID, Customer, Mode, Window string
			Limit, Share               int64
			ExpiresAt                  time.Time `json:"expires_at"`
		} `json:"throttles"`
	}
	if err := json.Unmarshal([]byte(r.body), &list); err != nil {
		t.Fatal(err)
	}
	if !list.Ready || !list.Fresh || list.Replica != "replica-1" || list.Fleet.Alive != 2 || !list.Fleet.Known {
		t.Fatalf("freshness: %+v, want ready, fresh, replica-1, 2 alive", list)
	}
	if len(list.Partitions) != 1 || list.Partitions[0].Lag != 2 {
		t.Fatalf("partitions %+v, want one with lag 2", list.Partitions)
	}
	if len(list.Throttles) != 1 {
		t.Fatalf("%d throttles, want 1", len(list.Throttles))
	}
	th := list.Throttles[0]
	if th.Customer != "acme" || th.Limit != 20 || th.Share != 10 || th.Mode != "shadow" || th.Window != "1m0s" || !th.ExpiresAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("throttle %+v, want acme 20/1m0s shadow, share 10", th)
	}

	r = e.do(http.MethodGet, "/v1/throttles/acme", "")
	if m := r.json(t); r.status != 200 || m["throttle"] == nil || m["ready"] != true {
		t.Fatalf("one throttle: status %d body %s, want 200 with the throttle", r.status, r.body)
	}
	r = e.do(http.MethodGet, "/v1/throttles/nobody", "")
	if m := r.json(t); r.status != 404 || m["field"] != "customer" {
		t.Fatalf("customer without throttle: status %d body %s, want 404", r.status, r.body)
	}
	if r := e.do(http.MethodGet, "/v1/throttles/a%07b", ""); r.status != 400 {
		t.Fatalf("invalid customer in the path: %d, want 400", r.status)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	e := newEnv(t, options{ready: true})
	e.metrics.WatchTable(e.table.Stats)
	e.metrics.WatchFleet(e.fleet.Size)
	e.metrics.WatchBuffer(e.sink.Buffered, e.sink.Capacity())
	e.post(`{"customer":"acme"}`)
	r := e.do(http.MethodGet, "/metrics", "")
	for _, want := range []string{
		`sluice_ingestion_decisions_total{result="accepted"} 1`,
		`sluice_ingestion_decision_events_total{result="accepted"} 1`,
		`sluice_ingestion_table_ready 1`,
		`sluice_ingestion_table_lag_records{partition="0"} 2`,
		`sluice_ingestion_fleet_size 1`,
		`sluice_ingestion_buffer_capacity_events 1000`,
		`sluice_ingestion_throttle_propagation_seconds_bucket`,
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// Payloads point into the pooled body buffer while the request is handled; what goes to
// Kafka must not: the buffer serves the next request once this one returns.
func TestMessagesKeepNoReferenceToTheBodyBuffer(t *testing.T) {
	body := []byte(`[{"customer":"acme","id":"i","payload":{"a":1}},{"customer":"acme","payload":[2]}]`)
	evs, aerr := appendEvents(nil, body, "")
	if aerr != nil {
		t.Fatal(aerr)
	}
	msgs, _, err := appendMessages(nil, nil, evs, "acme", t0)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{string(msgs[0].Value), string(msgs[1].Value)}
	copy(body, bytes.Repeat([]byte("X"), len(body)))
	for i, m := range msgs {
		if string(m.Value) != want[i] || string(m.Key) != "acme" {
			t.Fatalf("message %d changed with the buffer it was parsed from: %s", i, m.Value)
		}
	}
	// The customer outlives the request (the limiter keeps it as a key); the id, like
	// the payload, is read only while the request is handled.
	if evs[0].Customer != "acme" {
		t.Fatalf("the customer must be a copy: %+v", evs[0])
	}
}

// Requests reuse their memory, messages included, but never the messages of a write that
// failed: the Kafka writer may still send those, and must send what the client sent.
func TestAFailedWriteKeepsItsMessages(t *testing.T) {
	e := newEnv(t, options{ready: true, timeout: 100 * time.Millisecond})
	e.kafka.blocked = make(chan struct{})
	// Longer than the requests after it, so that their values would fit in its buffer.
	pad := strings.Repeat("a", 64)
	if r := e.post(`[{"customer":"acme","id":"a-0","payload":"` + pad + `"},{"customer":"acme","id":"a-1","payload":"` + pad + `"}]`); r.status != http.StatusServiceUnavailable {
		t.Fatalf("write that timed out: status %d, want 503", r.status)
	}
	e.kafka.mu.Lock()
	close(e.kafka.blocked)
	e.kafka.blocked = nil
	held := e.kafka.held
	want := make([]string, len(held))
	for i, m := range held {
		want[i] = string(m.Value)
	}
	e.kafka.mu.Unlock()
	if len(held) == 0 {
		t.Fatal("the writer holds no message of the failed write")
	}
	for i := range 50 {
		body := fmt.Sprintf(`[{"customer":"acme","id":"b-%d-0","payload":"%d"},{"customer":"acme","id":"b-%d-1","payload":"%d"}]`, i, i, i, i)
		if r := e.post(body); r.status != http.StatusAccepted {
			t.Fatalf("request %d: status %d, want 202", i, r.status)
		}
	}
	for i, m := range held {
		if string(m.Value) != want[i] {
			t.Fatalf("message %d of the failed write changed after it: %s, want %s", i, m.Value, want[i])
		}
	}
	if got := len(e.kafka.written()); got != 100 {
		t.Fatalf("%d messages written, want 100", got)
	}
}

func TestBodyTooLargeWithoutContentLength(t *testing.T) {
	e := newEnv(t, options{ready: true, maxBody: 1024})
	body := io.MultiReader(strings.NewReader(`{"customer":"acme","payload":"`), strings.NewReader(strings.Repeat("x", 4096)+`"}`))
	req, err := http.NewRequest(http.MethodPost, e.http.URL+"/v1/events", body) // chunked: no length
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || req.ContentLength != 0 {
		t.Fatalf("status %d (content length %d), want 413 on a chunked body", resp.StatusCode, req.ContentLength)
	}
}

func TestEventTooLargeForKafka(t *testing.T) {
	e := newEnv(t, options{ready: true, maxEvent: 200}, rec("acme", 2, time.Minute, throttle.ModeEnforce))
	r := e.post(`{"customer":"acme","payload":"` + strings.Repeat("x", 300) + `"}`)
	if m := r.json(t); r.status != http.StatusRequestEntityTooLarge || m["field"] != "payload" {
		t.Fatalf("status %d body %s, want 413 on payload", r.status, r.body)
	}
	// The refused event did not use the quota.
	if r := e.post(`[{"customer":"acme"},{"customer":"acme"}]`); r.status != http.StatusAccepted {
		t.Fatalf("after a 413: status %d, want 202 (quota given back)", r.status)
	}
}

func TestParseErrorsNameTheirPlace(t *testing.T) {
	tests := []struct{ body, field, msg string }{
		{"  {\"customer\":\"a\"} x", "", "after the JSON value at byte 18"},
		{`[{"customer":"a"},{"customer":"a","customer":"b"}]`, "[1].customer", `"customer" appears more than once`},
		{`{"id":"x","id":"y","customer":"a"}`, "id", `"id" appears more than once`},
		{`{"Customer":"a"}`, "Customer", "unknown field"},
		{`[{"customer":"a","payload":{"x":1,"x":2}}]`, "", ""}, // payloads are opaque: accepted
	}
	for _, tt := range tests {
		_, aerr := appendEvents(nil, []byte(tt.body), "")
		if tt.msg == "" {
			if aerr != nil {
				t.Errorf("%s: %v, want accepted", tt.body, aerr)
			}
			continue
		}
		if aerr == nil || aerr.Status != http.StatusBadRequest || aerr.Field != tt.field || !strings.Contains(aerr.Message, tt.msg) {
			t.Errorf("%s: got %+v, want 400 on %q containing %q", tt.body, aerr, tt.field, tt.msg)
		}
	}
}
