package admin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"go.uber.org/zap"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/throttlejson"
	"github.com/sluice-dev/sluice/services/processing/internal/metrics"
)

// Throttle is the JSON shape of a throttle record in every answer of the API: the one
// shared by every Sluice program.
type Throttle = throttlejson.Record

// Reason is the JSON shape of a throttle's reason.
type Reason = throttlejson.Reason

// SetRequest is the body of POST /v1/throttles. Pointers tell a missing field from a
// zero one.
type SetRequest struct {
	// ID, when the client chooses it, names the throttle: a retry with the same id sets
	// the same throttle, never a second one (as the Idempotency-Key header does).
	ID        *string `json:"id"`
	Customer  *string `json:"customer"`
	Limit     *int64  `json:"limit"`
	Window    *string `json:"window"`     // Go duration, whole milliseconds
	Duration  *string `json:"duration"`   // Go duration; or...
	ExpiresAt *string `json:"expires_at"` // ...RFC 3339, in the future
	Reason    string  `json:"reason"`
	Mode      string  `json:"mode"`   // enforce (default) or shadow
	SetBy     string  `json:"set_by"` // default "operator"
}

const (
	defaultSetBy = "operator"
	maxNote      = 1024
	maxSetBy     = 256
)

// fieldError is a 400 answer naming the field at fault.
type fieldError struct {
	field, msg string
}

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

func badField(field, format string, args ...any) *fieldError {
	return &fieldError{field: field, msg: fmt.Sprintf(format, args...)}
}

func (a *API) setThrottle(w http.ResponseWriter, r *http.Request) {
	var req SetRequest
	if status, fe := decodeBody(w, r, &req); fe != nil {
		writeError(w, status, fe.msg, fe.field)
		return
	}
	key := r.Header.Get(HeaderIdempotencyKey)
	if key != "" && !validKey(key) {
		writeError(w, http.StatusBadRequest, "Idempotency-Key must be 1 to 255 visible ASCII characters", HeaderIdempotencyKey)
		return
	}
	rec, fe := a.record(req)
	if fe != nil {
		writeError(w, http.StatusBadRequest, fe.msg, fe.field)
		return
	}
	if key == "" && req.ID != nil {
		key = "id:" + rec.ID
	}
	if key != "" {
		if req.ID == nil {
			rec.ID = idempotentID(key)
		}
		request := requestFields(req)
		if prev, ok := a.idem.get(key, a.now()); ok {
			if prev.request != request {
				writeError(w, http.StatusUnprocessableEntity, "this Idempotency-Key (or id) was used for another request", HeaderIdempotencyKey)
				return
			}
			rec = prev.rec // the same record again: same id, same times
			if prev.confirmed {
				a.replayed(w, rec)
				return
			}
		}
		// Published before (by this replica or another, whose answer was lost): the
		// table holds it under the same id.
		if cur, ok := a.table.Get(rec.Customer); ok && cur.ID == rec.ID {
			a.replayed(w, cur)
			return
		}
		a.idem.put(key, idemEntry{request: request, rec: rec, at: a.now()})
	}
	// The write is not tied to the client's connection: a client that goes away does not
	// cut it short, and what is logged and counted is what happened to it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), publishTimeout)
	defer cancel()
	if err := a.pub.Set(ctx, rec); err != nil {
		a.metrics.PublishErrors.WithLabelValues(metrics.ActionSet).Inc()
		a.log.Error("operator throttle not confirmed", zap.String("customer", rec.Customer), zap.String("id", rec.ID), zap.Error(err))
		// kafka-go has no idempotent producer: a write that failed may still have landed.
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("throttle %s not confirmed: %v; it may still take effect: "+
			"retry with the same Idempotency-Key (or id) to set it exactly once, or lift it", rec.ID, err), "")
		return
	}
	if key != "" {
		a.idem.put(key, idemEntry{request: requestFields(req), rec: rec, confirmed: true, at: a.now()})
	}
	a.metrics.Throttles.WithLabelValues(metrics.ActionSet, metrics.ReasonManual).Inc()
	a.log.Info("throttle set by operator", zap.String("customer", rec.Customer), zap.String("id", rec.ID),
		zap.Int64("limit", rec.Limit), zap.Duration("window", rec.Window), zap.Time("expires_at", rec.ExpiresAt),
		zap.String("mode", rec.Mode.String()), zap.String("set_by", rec.SetBy), zap.String("remote", r.RemoteAddr))
	w.Header().Set("Location", "/v1/throttles/"+url.PathEscape(rec.Customer))
	writeJSON(w, http.StatusCreated, throttlejson.From(rec))
}

// replayed answers a retried request whose throttle is set already, as the first answer
// did.
func (a *API) replayed(w http.ResponseWriter, rec throttle.Record) {
	w.Header().Set("Idempotent-Replayed", "true")
	w.Header().Set("Location", "/v1/throttles/"+url.PathEscape(rec.Customer))
	writeJSON(w, http.StatusCreated, throttlejson.From(rec))
}

// requestFields is what makes two requests the same request: every field, dereferenced.
func requestFields(req SetRequest) string {
	deref := func(p *string) string {
		if p == nil {
			return "\x00"
		}
		return *p
	}
	limit := "\x00"
	if req.Limit != nil {
		limit = strconv.FormatInt(*req.Limit, 10)
	}
	return strings.Join([]string{deref(req.ID), deref(req.Customer), limit, deref(req.Window), deref(req.Duration),
		deref(req.ExpiresAt), req.Reason, req.Mode, req.SetBy}, "\x00")
}

// decodeBody reads one JSON object as strictly as ingestion reads events: names match
// exactly (no case folding, so "Customer" is an unknown field, not a second customer), a
// name given twice, invalid UTF-8, unknown fields and trailing data are refused, naming
// the field; a body over maxBody gets 413.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) (int, *fieldError) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge, badField("", "request body exceeds %d bytes", tooBig.Limit)
	case err != nil:
		return http.StatusBadRequest, badField("", "read request body: %v", err)
	case len(bytes.TrimSpace(b)) == 0:
		return http.StatusBadRequest, badField("", "request body is empty")
	}
	err = json.Unmarshal(b, v, json.RejectUnknownMembers(true))
	if err == nil {
		return 0, nil
	}
	var (
		syn *jsontext.SyntacticError
		sem *json.SemanticError
	)
	switch {
	case errors.As(err, &syn):
		field := fieldName(syn.JSONPointer)
		switch {
		case errors.Is(err, jsontext.ErrDuplicateName):
			return http.StatusBadRequest, badField(field, "field %q is given twice", field)
		case strings.Contains(err.Error(), "invalid UTF-8"):
			return http.StatusBadRequest, badField(field, "%s is not valid UTF-8", field)
		}
		return http.StatusBadRequest, badField("", "malformed JSON at byte %d", syn.ByteOffset)
	case errors.As(err, &sem):
		field := fieldName(sem.JSONPointer)
		switch {
		case errors.Is(err, json.ErrUnknownName):
			return http.StatusBadRequest, badField(field, "unknown field %q (names are lower case, exactly as documented)", field)
		case field == "":
			return http.StatusBadRequest, badField("", "request body must be a JSON object")
		case sem.GoType != nil:
			return http.StatusBadRequest, badField(field, "%s must be a JSON %s", field, jsonKind(sem.GoType))
		}
		return http.StatusBadRequest, badField(field, "%s: %v", field, sem.Err)
	}
	return http.StatusBadRequest, badField("", "malformed JSON: %v", err)
}

// fieldName is the top-level field a JSON pointer names ("/limit" → "limit").
func fieldName(p jsontext.Pointer) string {
	s, _, _ := strings.Cut(strings.TrimPrefix(string(p), "/"), "/")
	return s
}

func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "number (an integer in range)"
	case reflect.String:
		return "string"
	}
	return t.Kind().String()
}

// record checks a request and builds the throttle it asks for.
func (a *API) record(req SetRequest) (throttle.Record, *fieldError) {
	now := a.now().UTC().Truncate(time.Millisecond) // the wire keeps milliseconds
	rec := throttle.Record{
		ID:        a.newID(),
		CreatedAt: now,
		Reason:    throttle.Reason{Kind: throttle.ReasonManual, Note: req.Reason},
		SetBy:     req.SetBy,
	}

	if req.ID != nil {
		if *req.ID == "" || len(*req.ID) > maxIdempotencyKey || strings.IndexFunc(*req.ID, func(r rune) bool { return r < 0x21 || r > 0x7e }) >= 0 {
			return rec, badField("id", "id must be 1 to %d visible ASCII characters", maxIdempotencyKey)
		}
		rec.ID = *req.ID
	}
	if req.Customer == nil {
		return rec, badField("customer", "customer is required")
	}
	if err := throttle.ValidateCustomer(*req.Customer); err != nil {
		return rec, badField("customer", "%v", err)
	}
	rec.Customer = *req.Customer

	if req.Limit == nil {
		return rec, badField("limit", "limit is required")
	}
	if *req.Limit < 0 {
		return rec, badField("limit", "limit %d is negative", *req.Limit)
	}
	rec.Limit = *req.Limit

	if req.Window == nil {
		return rec, badField("window", "window is required")
	}
	win, err := time.ParseDuration(*req.Window)
	switch {
	case err != nil:
		return rec, badField("window", "window %q is not a duration like \"1m\"", *req.Window)
	case win <= 0:
		return rec, badField("window", "window %s is not positive", win)
	case win%time.Millisecond != 0:
		return rec, badField("window", "window %s is not a whole number of milliseconds", win)
	}
	rec.Window = win

	switch {
	case req.Duration != nil && req.ExpiresAt != nil:
		return rec, badField("expires_at", "give duration or expires_at, not both")
	case req.Duration != nil:
		d, err := time.ParseDuration(*req.Duration)
		if err != nil {
			return rec, badField("duration", "duration %q is not a duration like \"10m\"", *req.Duration)
		}
		if d <= 0 {
			return rec, badField("duration", "duration %s is not positive", d)
		}
		rec.ExpiresAt = now.Add(d).Truncate(time.Millisecond)
	case req.ExpiresAt != nil:
		t, err := time.Parse(time.RFC3339Nano, *req.ExpiresAt)
		if err != nil {
			return rec, badField("expires_at", "expires_at %q is not an RFC 3339 time", *req.ExpiresAt)
		}
		t = t.UTC().Truncate(time.Millisecond)
		if !t.After(now) {
			return rec, badField("expires_at", "expires_at %s is not in the future", t.Format(time.RFC3339))
		}
		rec.ExpiresAt = t
	default:
		return rec, badField("duration", "duration or expires_at is required")
	}

	var mode throttle.Mode
	if err := mode.UnmarshalText([]byte(req.Mode)); err != nil {
		return rec, badField("mode", "%v", err)
	}
	rec.Mode = mode

	if len(req.Reason) > maxNote {
		return rec, badField("reason", "reason is %d bytes, at most %d allowed", len(req.Reason), maxNote)
	}
	if rec.SetBy == "" {
		rec.SetBy = defaultSetBy
	}
	if len(rec.SetBy) > maxSetBy || strings.IndexFunc(rec.SetBy, unicode.IsControl) >= 0 {
		return rec, badField("set_by", "set_by must be at most %d bytes without control characters", maxSetBy)
	}
	// The checks above name the field; this one guards the rules they may have missed.
	if err := rec.Validate(); err != nil {
		return rec, badField("", "%v", err)
	}
	return rec, nil
}

func (a *API) liftThrottle(w http.ResponseWriter, r *http.Request) {
	customer := r.PathValue("customer")
	if err := throttle.ValidateCustomer(customer); err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), "customer")
		return
	}
	reason := "unknown" // lifted before this replica's table saw it
	if cur, ok := a.table.Get(customer); ok {
		reason = reasonLabel(cur)
	}
	// As for a set: the client going away does not cut the write short.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), publishTimeout)
	defer cancel()
	if err := a.pub.Lift(ctx, customer); err != nil {
		a.metrics.PublishErrors.WithLabelValues(metrics.ActionLifted).Inc()
		a.log.Error("operator lift not confirmed", zap.String("customer", customer), zap.Error(err))
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("lift of %s not confirmed: %v; it may still take effect: lifting again is safe", customer, err), "")
		return
	}
	a.metrics.Throttles.WithLabelValues(metrics.ActionLifted, reason).Inc()
	a.log.Info("throttle lifted by operator", zap.String("customer", customer), zap.String("remote", r.RemoteAddr))
	w.WriteHeader(http.StatusNoContent)
}

func reasonLabel(r throttle.Record) string {
	if r.Reason.Kind == throttle.ReasonManual || r.Reason.Metric == "" {
		return metrics.ReasonManual
	}
	return r.Reason.Metric
}

// listThrottles answers from this replica's table: a throttle set a moment ago shows
// once the table has read it back from the topic.
func (a *API) listThrottles(w http.ResponseWriter, _ *http.Request) {
	if !a.table.Ready() {
		writeError(w, http.StatusServiceUnavailable, "throttle table is not caught up yet", "")
		return
	}
	now := a.now()
	recs := a.table.Active()
	out := make([]Throttle, 0, len(recs))
	for _, r := range recs {
		if r.Active(now) {
			out = append(out, throttlejson.From(r))
		}
	}
	slices.SortFunc(out, func(x, y Throttle) int { return strings.Compare(x.Customer, y.Customer) })
	writeJSON(w, http.StatusOK, map[string][]Throttle{"throttles": out})
}

func (a *API) getThrottle(w http.ResponseWriter, r *http.Request) {
	customer := r.PathValue("customer")
	if err := throttle.ValidateCustomer(customer); err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), "customer")
		return
	}
	if !a.table.Ready() {
		writeError(w, http.StatusServiceUnavailable, "throttle table is not caught up yet", "")
		return
	}
	rec, ok := a.table.Get(customer)
	if !ok || !rec.Active(a.now()) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no active throttle for customer %q", customer), "")
		return
	}
	writeJSON(w, http.StatusOK, throttlejson.From(rec))
}
