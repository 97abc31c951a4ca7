package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle/follow"
	"github.com/sluice-dev/sluice/services/platform/audit"
)

// errShort: the audit found settled buckets with events missing.
var errShort = errors.New("events missing")

func auditCommand() *command {
	return &command{
		name: "audit", summary: "reconcile the tiers' event counts, per partition and minute", output: true,
		help: `
Reads the audit topic (AUDIT_TOPIC, default sluice.audit) from its first offset and
compares, per events partition and bucket of ingestion time, the events ingestion
accepted with the offsets processing forwarded and dead-lettered. Each bucket is
complete, short (events accepted and never processed), over (processed, never counted
as accepted) or open (within --grace of its end: counts may still come). Duplicates
(offsets processed twice, after a rebalance or a crash) are counted apart, and an
ingestion replica that stopped without publishing its last counts is named.

Prints the buckets that ended within --since, then the totals. Exits with 4 when a
settled bucket is short.`,
		define: func(fs *flag.FlagSet) action {
			since := fs.Duration("since", time.Hour, "show the buckets that ended within this long")
			grace := fs.Duration("grace", 2*time.Minute, "how long after its end a bucket is still open (the services' AUDIT_GRACE)")
			topic := fs.String("audit-topic", "", "the audit topic (default: AUDIT_TOPIC)")
			return func(ctx context.Context, s *session, _ []string) error {
				if *since <= 0 || *grace < 0 {
					return usagef("--since must be positive and --grace not negative")
				}
				name := *topic
				if name == "" {
					name = s.cfg.AuditTopic
				}
				if name == "" {
					return usagef("no audit topic: set AUDIT_TOPIC or --audit-topic")
				}
				return s.audit(ctx, name, *since, *grace)
			}
		},
	}
}

// auditReport is the JSON output of audit.
type auditReport struct {
	Topic   string       `json:"topic"`
	At      time.Time    `json:"at"`
	Since   time.Time    `json:"since"`
	Buckets []audit.Row  `json:"buckets"`
	Totals  audit.Totals `json:"totals"`
	Skipped int64        `json:"skipped_records"`
}

func (s *session) audit(ctx context.Context, topic string, since, grace time.Duration) error {
	kc, err := s.kafka()
	if err != nil {
		return err
	}
	book := audit.NewBook(s.log, 0)
	if _, err := follow.Scan(ctx, kc, topic, func(m kafka.Message) error { return book.Apply(ctx, m) }); err != nil {
		return s.unreachable(ctx, kc, topic, err)
	}
	now := s.now()
	from := now.Add(-since)
	rep := auditReport{Topic: topic, At: now.UTC(), Since: from.UTC(), Buckets: []audit.Row{}, Skipped: book.Skipped()}
	for _, r := range book.Reconcile(now, grace) {
		if r.End().After(from) {
			rep.Buckets = append(rep.Buckets, r)
		}
	}
	rep.Totals = audit.Sum(rep.Buckets)
	if s.json {
		err = writeJSON(s.stdout, rep)
	} else {
		err = printAudit(s.stdout, rep)
	}
	if err == nil && rep.Totals.Buckets[audit.Short] > 0 {
		return fmt.Errorf("%d short buckets, %d events missing: %w", rep.Totals.Buckets[audit.Short], rep.Totals.Missing, errShort)
	}
	return err
}

func printAudit(w io.Writer, rep auditReport) error {
	if len(rep.Buckets) == 0 {
		_, err := fmt.Fprintf(w, "no audit counts on topic %s since %s\n", rep.Topic, rep.Since.Format(time.RFC3339))
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "BUCKET\tPARTITION\tACCEPTED\tFORWARDED\tDEAD-LETTERED\tDUPLICATES\tSTATUS\t")
	for _, r := range rep.Buckets {
		status := r.Status
		switch {
		case r.Missing > 0:
			status += fmt.Sprintf(" by %d", r.Missing)
		case r.Extra > 0:
			status += fmt.Sprintf(" by %d", r.Extra)
		}
		if len(r.Unpublished) > 0 {
			status += fmt.Sprintf(" (unpublished: %v)", r.Unpublished)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\t\n", r.Bucket.Format("2006-01-02 15:04:05"), r.Partition,
			r.Accepted, r.Forwarded, r.DeadLettered, r.Duplicates, status)
	}
	t := rep.Totals
	fmt.Fprintf(tw, "total\t\t%d\t%d\t%d\t%d\t%d complete, %d short, %d over, %d open\t\n", t.Accepted, t.Forwarded, t.DeadLettered, t.Duplicates,
		t.Buckets[audit.Complete], t.Buckets[audit.Short], t.Buckets[audit.Over], t.Buckets[audit.Open])
	if err := tw.Flush(); err != nil {
		return err
	}
	if t.Missing > 0 || t.Extra > 0 || rep.Skipped > 0 {
		_, err := fmt.Fprintf(w, "missing %d, over %d, unreadable audit records %d\n", t.Missing, t.Extra, rep.Skipped)
		return err
	}
	return nil
}
