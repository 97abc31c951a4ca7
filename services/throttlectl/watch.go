package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/throttlejson"
)

func watchCommand() *command {
	return &command{
		name: "watch", summary: "print changes to the throttles as they happen", output: true, follow: true,
		help: `
Rebuilds the throttle table from the topic, then prints one line per change until
interrupted (Ctrl-C): set, lifted, expired, stale_tombstone (an expiry tombstone that
named an older throttle and was ignored), with the customer, the limit, the expiry and
the propagation age (now minus the record's timestamp). --from-start also prints the
changes read while rebuilding. --timeout bounds reaching the broker and catching up;
after that, watch runs until interrupted, through broker outages (noted on stderr).`,
		define: func(fs *flag.FlagSet) action {
			fromStart := fs.Bool("from-start", false, "also print the records read while rebuilding the table")
			return func(ctx context.Context, s *session, _ []string) error { return s.watch(ctx, *fromStart) }
		},
	}
}

// changeJSON is one line of watch --output json.
type changeJSON struct {
	Time       time.Time            `json:"time"`
	Change     string               `json:"change"`
	Customer   string               `json:"customer"`
	Limit      string               `json:"limit,omitempty"`
	ExpiresAt  *time.Time           `json:"expires_at,omitempty"`
	AgeMS      *int64               `json:"age_ms,omitempty"` // absent for an expiry the table noticed by itself
	Partition  int                  `json:"partition"`
	Offset     int64                `json:"offset"` // -1 for an expiry the table noticed by itself
	Rebuilding bool                 `json:"rebuilding"`
	Throttle   *throttlejson.Record `json:"throttle,omitempty"`
}

func (s *session) watch(ctx context.Context, fromStart bool) error {
	readyCtx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	tb, stop, err := s.readTable(ctx, readyCtx, throttle.WithObserver(func(c throttle.Change) {
		if c.Rebuilding && !fromStart {
			return
		}
		s.printChange(c)
	}))
	if err != nil {
		if ctx.Err() != nil {
			return nil // interrupted while catching up
		}
		return err
	}
	defer stop()
	fmt.Fprintf(s.stderr, "caught up with topic %s (%d active throttles); watching, Ctrl-C to stop\n", s.topic(), len(tb.Active()))

	// The table serves what it knew while the broker is away: say when that happens, or
	// a quiet watch would look like a quiet topic.
	fresh := true
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if f := tb.Stats().Fresh; f != fresh {
			fresh = f
			if f {
				fmt.Fprintf(s.stderr, "%s broker reachable again; watching\n", timeText(s.now()))
			} else {
				fmt.Fprintf(s.stderr, "%s brokers %s unreachable; changes will show once they are back\n", timeText(s.now()), strings.Join(s.cfg.Brokers, ","))
			}
		}
	}
}

func (s *session) printChange(c throttle.Change) {
	now := s.now()
	hasRecord := c.Record.ID != ""
	noticed := c.Kind == throttle.ChangeExpired && c.Offset < 0 // by the table's clock, not a record
	if s.json {
		l := changeJSON{Time: now.UTC(), Change: c.Kind.String(), Customer: c.Customer, Partition: c.Partition, Offset: c.Offset, Rebuilding: c.Rebuilding}
		if hasRecord {
			t := throttlejson.From(c.Record)
			l.Throttle, l.Limit, l.ExpiresAt = &t, formatLimit(c.Record.Limit, c.Record.Window), &t.ExpiresAt
		}
		if !noticed {
			ms := c.Age.Milliseconds()
			l.AgeMS = &ms
		}
		_ = writeJSON(s.stdout, l) // a closed stdout ends nothing: Ctrl-C does
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %-15s  %s", now.UTC().Format("2006-01-02T15:04:05.000Z07:00"), c.Kind, c.Customer)
	if hasRecord {
		what := "until"
		switch c.Kind {
		case throttle.ChangeLifted:
			what = "was until"
		case throttle.ChangeExpired:
			what = "expired"
		case throttle.ChangeStaleTombstone, throttle.ChangePoisoned:
			what = "kept, until"
		}
		fmt.Fprintf(&b, "  %s %s %s %s", formatLimit(c.Record.Limit, c.Record.Window), c.Record.Mode, what, timeText(c.Record.ExpiresAt))
	}
	if !noticed {
		fmt.Fprintf(&b, "  age %s  %d@%d", c.Age.Round(time.Millisecond), c.Partition, c.Offset)
	}
	if hasRecord {
		fmt.Fprintf(&b, "  id %s", c.Record.ID)
	}
	if c.Rebuilding {
		b.WriteString("  (rebuild)")
	}
	b.WriteByte('\n')
	_, _ = s.stdout.Write([]byte(b.String()))
}
