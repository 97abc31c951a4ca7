package limit

import (
	"time"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

// Table finds a customer's active throttle. *throttle.Table satisfies it; it returns
// nothing until the table is ready (callers check readiness first).
type Table interface {
	Lookup(customer string) (throttle.Rule, bool)
}

// Fleet tells how many ingestion replicas are alive, this one included. known is false
// when this replica cannot tell (its membership view is not caught up, or it has not
// read its own heartbeat back recently).
type Fleet interface {
	Size() (alive int, known bool)
}

// Verdict is what happens to a request.
type Verdict uint8

const (
	// Unthrottled: the customer has no active throttle.
	Unthrottled Verdict = iota
	// Allowed: the events fit the customer's throttle and were charged to it.
	Allowed
	// Rejected: the events do not fit; nothing was charged.
	Rejected
	// ShadowRejected: a shadow-mode throttle would have rejected the events; they are
	// accepted and nothing was charged, exactly as an enforced rejection charges nothing,
	// so the shadow state follows what enforcing the throttle would have done.
	ShadowRejected
)

func (v Verdict) String() string {
	switch v {
	case Allowed:
		return "allowed"
	case Rejected:
		return "rejected"
	case ShadowRejected:
		return "shadow_rejected"
	}
	return "unthrottled"
}

// Decision is the Enforcer's answer for one request, with what the RateLimit headers
// need. Quota is this replica's share; the other fields are as in Result.
type Decision struct {
	Verdict Verdict
	Mode    throttle.Mode
	// ThrottleID, Customer and Quota identify the charge, for Refund.
	ThrottleID string
	Customer   string
	Quota      Quota
	// Limit is the throttle's fleet-wide limit; Quota.Q is this replica's share of it.
	Limit int64
	Result
}

// Enforcer decides requests against the throttle table.
type Enforcer struct {
	table   Table
	fleet   Fleet
	limiter *Limiter
}

// NewEnforcer returns an Enforcer. A nil fleet means a fleet of one (every replica
// enforces the full limit).
func NewEnforcer(t Table, f Fleet, l *Limiter) *Enforcer {
	return &Enforcer{table: t, fleet: f, limiter: l}
}

// Decide charges n events (n ≥ 1) of customer at now, all or nothing. It never allocates
// for a customer the limiter has seen, and never blocks on I/O.
func (e *Enforcer) Decide(customer string, n int64, now time.Time) Decision {
	rec, ok := e.table.Lookup(customer)
	if !ok {
		return Decision{Verdict: Unthrottled}
	}
	alive, known := 1, false
	if e.fleet != nil {
		alive, known = e.fleet.Size()
	}
	q := Quota{Q: Share(rec.Limit, alive, known), W: rec.Window}
	d := Decision{Mode: rec.Mode, ThrottleID: rec.ID(), Customer: customer, Quota: q, Limit: rec.Limit}
	if q.Q <= 0 || q.W <= 0 {
		// Limit 0 refuses everything until the throttle ends, so that is when to retry.
		// A window that is not positive breaks Record.Validate and cannot reach the
		// table; refusing is the safe reading of it anyway.
		until := max(rec.ExpiresAt().Sub(now), 0)
		d.Result = Result{Reset: until, RetryAfter: until}
	} else {
		d.Result = e.limiter.Take(customer, rec.ID(), q, n, now)
	}
	switch {
	case d.Allowed:
		d.Verdict = Allowed
	case rec.Mode == throttle.ModeShadow:
		d.Verdict = ShadowRejected
	default:
		d.Verdict = Rejected
	}
	return d
}

// Refund gives back the events of an Allowed decision whose request was then not
// accepted (it could not be buffered), so a refusal of ours does not eat the customer's
// quota.
func (e *Enforcer) Refund(d Decision, n int64) {
	if d.Verdict == Allowed {
		e.limiter.Refund(d.Customer, d.ThrottleID, d.Quota, n)
	}
}

// Share is this replica's part of a fleet-wide limit: limit/alive rounded up, and the
// full limit when the fleet size is unknown.
//
// Rounding up: every replica gets at least 1 event per window (a positive limit never
// turns into "refuse everything"), and when traffic is spread evenly the fleet admits at
// least the limit; the cost is at most alive-1 events per window above it.
//
// Unknown size → the full limit: when a replica cannot see the fleet (the broker has
// been away longer than the heartbeat TTL, or it has not caught up), any smaller share is
// a guess that can refuse a customer who is within its limit. A throttle exists to stop
// a flood, and the full limit on every replica still does: the fleet admits at most
// alive × limit per window, bounded, and only while the view is blind. So the blind case
// fails open to the limit, never closed below it. It is also the right share for the
// likeliest blind replica, one cut off from the others.
func Share(limit int64, alive int, known bool) int64 {
	if limit <= 0 {
		return 0
	}
	if !known || alive <= 1 {
		return limit
	}
	a := int64(alive)
	share := limit / a // rounded up below without limit+a-1, which overflows near the largest limit
	if limit%a != 0 {
		share++
	}
	return share
}
