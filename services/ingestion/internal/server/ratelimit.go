package server

import (
	"net/http"
	"strconv"
	"time"

	"github.com/sluice-dev/sluice/services/ingestion/internal/limit"
)

// setRateLimit sets the RateLimit-Policy and RateLimit fields of
// draft-ietf-httpapi-ratelimit-headers-09 (structured fields, one policy named
// "default"):
//
//	RateLimit-Policy: "default";q=<quota>;w=<window seconds>
//	RateLimit: "default";r=<remaining>;t=<seconds until the quota is whole again>
//
// q is this replica's share of the customer's limit (the limit divided among the alive
// replicas), since that is what r and t are counted against. The unit is events, not
// requests: a request of N events uses N. w and t are whole seconds, rounded up (the
// draft has no fractions). The limiter is a GCRA, a bucket that refills continuously,
// so t is when the whole quota is back, while r grows by one every w/q seconds before
// that. Shadow-mode throttles send no fields: the client is not limited.
//
// Every request of a throttled customer carries these, so they are built with two
// allocations: both values in one string, and one slice behind both fields. The keys are
// given in canonical form, as h.Set would store them (header names are case-insensitive).
func setRateLimit(h http.Header, d limit.Decision) {
	var b [96]byte
	p := append(b[:0], `"default";q=`...)
	p = appendInt(p, d.Quota.Q)
	p = append(p, ";w="...)
	p = appendInt(p, ceilSeconds(d.Quota.W))
	split := len(p)
	p = append(p, `"default";r=`...)
	p = appendInt(p, d.Remaining)
	p = append(p, ";t="...)
	p = appendInt(p, ceilSeconds(d.Reset))
	both := string(p)
	v := []string{both[:split], both[split:]}
	h[rateLimitPolicyKey] = v[0:1:1]
	h[rateLimitKey] = v[1:2:2]
}

// The canonical forms of RateLimit-Policy and RateLimit.
var (
	rateLimitPolicyKey = http.CanonicalHeaderKey("RateLimit-Policy")
	rateLimitKey       = http.CanonicalHeaderKey("RateLimit")
)

// setRetryAfter sets Retry-After in whole seconds, rounded up and at least 1: retrying
// sooner than the limiter allows would only be refused again.
func setRetryAfter(h http.Header, d time.Duration) {
	h.Set("Retry-After", strconv.FormatInt(max(ceilSeconds(d), 1), 10))
}

// ceilSeconds is d in whole seconds, rounded up. It cannot overflow: a throttle that
// expires centuries ahead has a d near the largest Duration (time.Time.Sub saturates
// there), and adding a second before dividing would wrap it negative.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	s := int64(d / time.Second)
	if d%time.Second != 0 {
		s++
	}
	return s
}

func appendInt(b []byte, n int64) []byte { return strconv.AppendInt(b, n, 10) }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
