package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

// units are the spellings of a limit's window that --limit accepts besides a Go duration.
var units = map[string]time.Duration{
	"s": time.Second, "sec": time.Second, "second": time.Second,
	"m": time.Minute, "min": time.Minute, "minute": time.Minute,
	"h": time.Hour, "hour": time.Hour,
	"d": 24 * time.Hour, "day": 24 * time.Hour,
}

// parseLimit reads N/sec, N/min, N/hour, N/day (and their short forms) or N/<Go duration>,
// as in 100/30s.
func parseLimit(s string) (int64, time.Duration, error) {
	num, per, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return 0, 0, fmt.Errorf("limit %q: want N/UNIT, e.g. 20/min or 100/30s", s)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, 0, fmt.Errorf("limit %q: %q is not a whole number of events >= 0", s, num)
	}
	w, ok := units[strings.ToLower(per)]
	if !ok {
		if w, err = time.ParseDuration(per); err != nil {
			return 0, 0, fmt.Errorf("limit %q: window %q: want sec, min, hour, day or a duration like 30s", s, per)
		}
	}
	if w <= 0 || w%time.Millisecond != 0 {
		return 0, 0, fmt.Errorf("limit %q: window %s: want a positive whole number of milliseconds", s, w)
	}
	return n, w, nil
}

// formatLimit is the inverse of parseLimit, in its plainest spelling.
func formatLimit(n int64, w time.Duration) string {
	switch w {
	case time.Second:
		return fmt.Sprintf("%d/sec", n)
	case time.Minute:
		return fmt.Sprintf("%d/min", n)
	case time.Hour:
		return fmt.Sprintf("%d/hour", n)
	case 24 * time.Hour:
		return fmt.Sprintf("%d/day", n)
	}
	return fmt.Sprintf("%d/%s", n, w)
}

// printable quotes a string that would break a line or a column of text output; notes
// and set-by are free text.
func printable(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) || r == unicode.ReplacementChar }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

func reasonText(r throttle.Reason) string {
	if r.Kind == throttle.ReasonAutomatic {
		s := "automatic"
		if r.Metric != "" {
			s += fmt.Sprintf(" %s=%g", r.Metric, r.Value)
		}
		if r.Note != "" {
			s += ": " + r.Note
		}
		return printable(s)
	}
	return printable(r.Note)
}

// until says how long from now t is, to the second. Sub and Round saturate at the
// largest Duration (an expiry after the year 2262), which Round then leaves unrounded.
func until(t, now time.Time) string {
	d := t.Sub(now).Round(time.Second)
	if d%time.Second != 0 {
		d = d.Truncate(time.Second)
	}
	if d <= 0 {
		return "expired"
	}
	return "in " + d.String()
}

func timeText(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// printTable prints throttles as aligned columns.
func printTable(w io.Writer, recs []throttle.Record, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CUSTOMER\tLIMIT\tMODE\tEXPIRES\t\tSET BY\tREASON\tID")
	for _, r := range recs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Customer, formatLimit(r.Limit, r.Window), r.Mode,
			timeText(r.ExpiresAt), until(r.ExpiresAt, now), printable(r.SetBy), reasonText(r.Reason), r.ID)
	}
	return tw.Flush()
}

// printRecord prints one throttle as "field: value" lines.
func printRecord(w io.Writer, r throttle.Record, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	fmt.Fprintf(tw, "customer:\t%s\n", r.Customer)
	fmt.Fprintf(tw, "limit:\t%s (%d events per %s)\n", formatLimit(r.Limit, r.Window), r.Limit, r.Window)
	fmt.Fprintf(tw, "mode:\t%s\n", r.Mode)
	fmt.Fprintf(tw, "created:\t%s\n", timeText(r.CreatedAt))
	fmt.Fprintf(tw, "expires:\t%s (%s)\n", timeText(r.ExpiresAt), until(r.ExpiresAt, now))
	if r.Reason.Kind == throttle.ReasonManual {
		fmt.Fprintf(tw, "reason:\tmanual: %s\n", reasonText(r.Reason))
	} else {
		fmt.Fprintf(tw, "reason:\t%s\n", reasonText(r.Reason))
	}
	fmt.Fprintf(tw, "set by:\t%s\n", printable(r.SetBy))
	fmt.Fprintf(tw, "id:\t%s\n", r.ID)
	return tw.Flush()
}

// writeJSON writes v as one line of JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // reasons are read by people and scripts, not browsers
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write json: %w", err)
	}
	return nil
}
