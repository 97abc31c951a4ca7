package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

// throttleJSON is the JSON shape of a throttle in every output of throttlectl and in the
// dump file. It is the shape of the processing admin API (admin.Throttle), so scripts read
// both the same way, and it carries every field of the record: restore rebuilds records
// from it, because the source registry's schema ids may be gone with the source cluster.
type throttleJSON struct {
	ID        string     `json:"id"`
	Customer  string     `json:"customer"`
	Limit     int64      `json:"limit"`
	Window    string     `json:"window"`    // Go duration, e.g. "1m0s"
	WindowMS  int64      `json:"window_ms"` // the same, in milliseconds as on the wire
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt time.Time  `json:"expires_at"`
	Reason    reasonJSON `json:"reason"`
	SetBy     string     `json:"set_by"`
	Mode      string     `json:"mode"` // enforce or shadow
}

type reasonJSON struct {
	Kind   string  `json:"kind"` // manual or automatic
	Note   string  `json:"note"`
	Metric string  `json:"metric"`
	Value  float64 `json:"value"`
}

func fromRecord(r throttle.Record) throttleJSON {
	v := r.Reason.Value
	if math.IsNaN(v) || math.IsInf(v, 0) {
		v = 0 // JSON has no spelling for them
	}
	return throttleJSON{
		ID: r.ID, Customer: r.Customer, Limit: r.Limit,
		Window: r.Window.String(), WindowMS: r.Window.Milliseconds(),
		CreatedAt: r.CreatedAt.UTC(), ExpiresAt: r.ExpiresAt.UTC(),
		Reason: reasonJSON{Kind: r.Reason.Kind.String(), Note: r.Reason.Note, Metric: r.Reason.Metric, Value: v},
		SetBy:  r.SetBy, Mode: r.Mode.String(),
	}
}

// record is the throttle t describes, validated. window_ms is authoritative; window is
// only for people.
func (t throttleJSON) record() (throttle.Record, error) {
	mode, err := throttle.ParseMode(t.Mode)
	if err != nil {
		return throttle.Record{}, err
	}
	var kind throttle.ReasonKind
	switch t.Reason.Kind {
	case "manual", "":
		kind = throttle.ReasonManual
	case "automatic":
		kind = throttle.ReasonAutomatic
	default:
		return throttle.Record{}, fmt.Errorf("reason kind %q: want manual or automatic", t.Reason.Kind)
	}
	r := throttle.Record{
		ID: t.ID, Customer: t.Customer, Limit: t.Limit, Window: time.Duration(t.WindowMS) * time.Millisecond,
		CreatedAt: t.CreatedAt.UTC(), ExpiresAt: t.ExpiresAt.UTC(),
		Reason: throttle.Reason{Kind: kind, Note: t.Reason.Note, Metric: t.Reason.Metric, Value: t.Reason.Value},
		SetBy:  t.SetBy, Mode: mode,
	}
	if err := r.Validate(); err != nil {
		return throttle.Record{}, err
	}
	return r, nil
}

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

// until says how long from now t is, to the second.
func until(t, now time.Time) string {
	d := t.Sub(now).Round(time.Second)
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
