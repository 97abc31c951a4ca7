package main

import (
	"testing"
	"time"
)

// TestUntilSaturates: an expiry past the largest time.Duration from now (after the year
// 2262) reads as that largest duration, not as a wrapped or negative one.
func TestUntilSaturates(t *testing.T) {
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		at   time.Time
		want string
	}{
		{now.Add(90 * time.Minute), "in 1h30m0s"},
		{now.Add(-time.Second), "expired"},
		{time.Date(2500, 1, 1, 0, 0, 0, 0, time.UTC), "in 2562047h47m16s"},
	} {
		if got := until(c.at, now); got != c.want {
			t.Errorf("until(%s) = %q, want %q", c.at, got, c.want)
		}
	}
}
