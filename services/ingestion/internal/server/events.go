package server

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/services/ingestion/internal/limit"
	"github.com/sluice-dev/sluice/services/ingestion/internal/metrics"
	"github.com/sluice-dev/sluice/services/ingestion/internal/sink"
	"github.com/sluice-dev/sluice/services/platform/event"
)

// postEvents takes one event or an array of one customer's events.
//
// The order of checks: API key (401), body size (413), body (400, 403), readiness (503),
// the customer's throttle (429), the buffer (503). A request is all or nothing: a batch
// of N events costs N and is accepted whole or refused whole, so a client never has to
// work out which of its events got in.
func (s *Server) postEvents(w http.ResponseWriter, r *http.Request) {
	keyCustomer := ""
	if s.keys != nil {
		c, aerr := s.keys.customer(r)
		if aerr != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sluice"`)
			writeJSON(w, aerr.Status, aerr)
			return
		}
		keyCustomer = c
	}
	sc := s.scratch.Get().(*scratch)
	unsettled := false // the sink has msgs and did not write them all
	defer func() { s.putScratch(sc, unsettled) }()
	if aerr := s.readBody(w, r, &sc.body); aerr != nil {
		writeJSON(w, aerr.Status, aerr)
		return
	}
	events, aerr := appendEvents(sc.events, sc.body.Bytes(), keyCustomer)
	sc.events = events[:0]
	if aerr != nil {
		writeJSON(w, aerr.Status, aerr)
		return
	}
	n := len(events)
	customer := events[0].Customer

	if !s.table.Ready() {
		s.metrics.Decided(metrics.NotReady, n)
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, &apiError{Message: "not ready: the throttle table is still catching up"})
		return
	}
	if s.draining.Load() {
		s.metrics.Decided(metrics.Overloaded, n)
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, &apiError{Message: "shutting down"})
		return
	}
	if n > s.sink.Capacity() {
		writeJSON(w, http.StatusRequestEntityTooLarge, &apiError{Message: "too many events in one request for this replica's buffer; split it"})
		return
	}

	now := s.cfg.Clock()
	d := s.enforcer.Decide(customer, int64(n), now)
	if d.Verdict != limit.Unthrottled && d.Mode == throttle.ModeEnforce {
		setRateLimit(w.Header(), d)
	}
	if d.Verdict == limit.Rejected {
		s.metrics.Decided(metrics.Rejected, n)
		setRetryAfter(w.Header(), d.RetryAfter)
		msg := "customer is throttled: over this replica's share of its limit; retry later"
		if d.Quota.Q > 0 && int64(n) > d.Quota.Q {
			msg = "customer is throttled and the request has more events than this replica's quota per window; split it"
		}
		writeJSON(w, http.StatusTooManyRequests, &apiError{Message: msg})
		return
	}

	msgs, values, err := appendMessages(sc.msgs, sc.values, events, customer, now)
	sc.msgs, sc.values = msgs[:0], values[:0]
	if err != nil { // only text that is not UTF-8, which the parser has refused already
		s.enforcer.Refund(d, int64(n))
		writeJSON(w, http.StatusBadRequest, &apiError{Message: err.Error()})
		return
	}
	unsettled = true
	if err := s.sink.Write(msgs); err != nil {
		s.refused(w, r, d, n, err)
		return
	}
	unsettled = false
	if s.cfg.Audit != nil {
		s.cfg.Audit.Accepted(msgs)
	}
	if d.Verdict == limit.ShadowRejected {
		s.metrics.Decided(metrics.ShadowRejected, n)
	} else {
		s.metrics.Decided(metrics.Accepted, n)
	}
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(http.StatusAccepted)
	var out [40]byte
	_, _ = w.Write(appendAccepted(out[:0], n))
}

// refused answers a request whose events the sink did not take, and gives the
// customer's quota back when the events were certainly not written.
func (s *Server) refused(w http.ResponseWriter, r *http.Request, d limit.Decision, n int, err error) {
	if notWritten(err) {
		s.enforcer.Refund(d, int64(n))
	}
	if errors.Is(err, sink.ErrTooLarge) {
		writeJSON(w, http.StatusRequestEntityTooLarge, &apiError{Message: strings.TrimPrefix(err.Error(), sink.ErrTooLarge.Error()+": "), Field: "payload"})
		return
	}
	if r.Context().Err() != nil {
		return // the client left; its events are still written
	}
	s.metrics.Decided(metrics.Overloaded, n)
	w.Header().Set("Retry-After", "1")
	// Fixed messages: the sink's errors name brokers, which are not the client's business.
	msg := "events not accepted: Kafka did not acknowledge them in time; some may have been written, retry with the same ids"
	switch {
	case errors.Is(err, sink.ErrFull):
		msg = "events not accepted: this replica's buffer is full; retry later"
	case errors.Is(err, sink.ErrClosed):
		msg = "events not accepted: shutting down"
	case notWritten(err):
		msg = "events not accepted: Kafka did not acknowledge them in time; none were written"
	}
	writeJSON(w, http.StatusServiceUnavailable, &apiError{Message: msg})
}

// readBody reads the body into buf: 413 beyond the limit.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, buf *bytes.Buffer) *apiError {
	tooLarge := func() *apiError {
		return &apiError{Status: http.StatusRequestEntityTooLarge, Message: "body larger than " + itoa(s.cfg.MaxBodyBytes) + " bytes"}
	}
	if r.ContentLength > s.cfg.MaxBodyBytes {
		return tooLarge()
	}
	if n := r.ContentLength; n >= 0 && n <= smallBody {
		// net/http stops the body at its Content-Length: read it in one go, without the
		// MaxBytesReader a body of unknown length needs. Only for small bodies: room is
		// made before the bytes arrive, and a client must not make this replica hold a
		// large buffer for a body it only announced.
		buf.Grow(int(n))
		b := buf.AvailableBuffer()[:n]
		if _, err := io.ReadFull(r.Body, b); err != nil {
			return badRequest("", "reading the body: %s", err.Error())
		}
		buf.Write(b)
		return nil
	}
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
	if _, err := buf.ReadFrom(body); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return tooLarge()
		}
		return badRequest("", "reading the body: %s", err.Error())
	}
	return nil
}

// smallBody is the largest body read in one go, and the largest buffer kept for reuse:
// a pooled scratch then holds a few hundred KiB at most.
const smallBody = 64 << 10

// scratch is the memory a request of events works in, reused by later requests: at
// tens of thousands of requests a second, allocating it anew is most of the garbage the
// service makes.
type scratch struct {
	body   bytes.Buffer
	events []inEvent // point into body
	msgs   []kafka.Message
	values []byte // the msgs' values
}

// putScratch returns sc to the pool, without what one large request made too big to
// keep, and without the messages and values if the sink failed to write them
// (unsettled): the Kafka writer may still hold them in a batch.
func (s *Server) putScratch(sc *scratch, unsettled bool) {
	if sc.body.Cap() > smallBody {
		sc.body = bytes.Buffer{}
	}
	sc.body.Reset()
	clear(sc.events[:cap(sc.events)])
	if cap(sc.events) > 1024 {
		sc.events = nil
	}
	if unsettled || cap(sc.msgs) > 512 || cap(sc.values) > smallBody {
		sc.msgs, sc.values = nil, nil
	}
	clear(sc.msgs[:cap(sc.msgs)])
	s.scratch.Put(sc)
}

func appendAccepted(b []byte, n int) []byte {
	b = append(b, `{"accepted":`...)
	b = appendInt(b, int64(n))
	return append(b, "}\n"...)
}

// appendMessages turns a request's events into Kafka messages keyed by customer, stamped
// with one ingestion time, appending them to msgs and their values to values (both
// reused from an earlier request).
func appendMessages(msgs []kafka.Message, values []byte, events []inEvent, customer string, now time.Time) ([]kafka.Message, []byte, error) {
	key := []byte(customer) // shared by every message: kafka-go does not modify keys
	stamp, err := event.NewStamp(customer, now.UTC())
	if err != nil { // the parser checked the customer
		return msgs, values, err
	}
	// One buffer holds every value of the request: one allocation at most instead of one
	// per event. It must not be the body's buffer, which the next request reuses.
	size := 0
	for i := range events {
		size += len(events[i].ID) + len(customer) + len(events[i].Payload) + 96
	}
	buf := slices.Grow(values[:0], size)
	for i := range events {
		start := len(buf)
		if buf, err = stamp.Append(buf, events[i].ID, events[i].Payload); err != nil { // the parser checked both
			return msgs, buf, err
		}
		// The record's timestamp is the ingestion time: the audit's bucket in every tier.
		msgs = append(msgs, kafka.Message{Key: key, Value: buf[start:len(buf):len(buf)], Time: now})
	}
	return msgs, buf, nil
}

// notWritten reports whether a sink error means no event of the request was written, so
// the quota it was charged can be given back.
func notWritten(err error) bool {
	return errors.Is(err, sink.ErrFull) || errors.Is(err, sink.ErrClosed) ||
		errors.Is(err, sink.ErrNotWritten) || errors.Is(err, sink.ErrTooLarge)
}
