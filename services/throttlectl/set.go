package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/throttlejson"
)

// The bounds the processing admin API puts on an operator's free text.
const (
	maxNote  = 1024
	maxSetBy = 256
)

func setCommand() *command {
	return &command{
		name: "set", args: "CUSTOMER", nargs: 1, output: true,
		flags:   "--limit N/UNIT (--for DURATION | --until TIME) --reason TEXT",
		summary: "publish a throttle for a customer",
		help: `
Publishes a manual throttle: at most --limit events per window, from now until --for has
passed or until --until. It replaces any throttle the customer has. The write is
acknowledged by all in-sync replicas before throttlectl exits.

  throttlectl set acme --limit 20/min --for 10m --reason "runaway batch job"
  throttlectl set acme --limit 100/30s --until 2030-01-02T15:04:05Z --reason "trial" --shadow

--limit is N/sec, N/min, N/hour or N/day (or s, m, h, d), or N/<duration> as in 100/30s;
N may be 0 (reject everything). --shadow counts would-be rejections without rejecting.`,
		define: func(fs *flag.FlagSet) action {
			limit := fs.String("limit", "", "events per window: N/sec, N/min, N/hour, N/day or N/<duration> (required)")
			dur := fs.Duration("for", 0, "how long the throttle lasts, e.g. 10m (this or --until is required)")
			untilFlag := fs.String("until", "", "when the throttle ends, RFC 3339, e.g. 2030-01-02T15:04:05Z")
			reason := fs.String("reason", "", "why, for the people who will see it (required)")
			shadow := fs.Bool("shadow", false, "shadow mode: count would-be rejections, reject nothing")
			setBy := fs.String("set-by", defaultSetBy(), "who sets it")
			return func(ctx context.Context, s *session, args []string) error {
				r, err := newRecord(args[0], *limit, *dur, *untilFlag, *reason, *setBy, *shadow, s.now())
				if err != nil {
					return err
				}
				err = s.publish(ctx, func(p *throttle.Publisher) error { return p.Set(ctx, r) })
				if err != nil {
					return err
				}
				if s.json {
					return writeJSON(s.stdout, throttlejson.From(r))
				}
				_, err = fmt.Fprintf(s.stdout, "set throttle for %s: %s %s until %s (%s), id %s\n",
					r.Customer, formatLimit(r.Limit, r.Window), r.Mode, timeText(r.ExpiresAt), until(r.ExpiresAt, s.now()), r.ID)
				return err
			}
		},
	}
}

// defaultSetBy names the operator from the login name, as the audit trail wants a person.
func defaultSetBy() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "operator"
}

// newRecord checks the flags of set and builds the record. Every error is a usage error:
// nothing has been contacted yet.
func newRecord(customer, limit string, dur time.Duration, untilText, reason, setBy string, shadow bool, now time.Time) (throttle.Record, error) {
	if err := throttle.ValidateCustomer(customer); err != nil {
		return throttle.Record{}, usageError{err}
	}
	if limit == "" {
		return throttle.Record{}, usagef("--limit is required, e.g. --limit 20/min")
	}
	n, window, err := parseLimit(limit)
	if err != nil {
		return throttle.Record{}, usageError{err}
	}
	// Milliseconds: the precision of the record's timestamps on the wire.
	created := now.UTC().Truncate(time.Millisecond)
	var expires time.Time
	switch {
	case dur != 0 && untilText != "":
		return throttle.Record{}, usagef("--for and --until are exclusive: give one")
	case dur == 0 && untilText == "":
		return throttle.Record{}, usagef("--for or --until is required")
	case dur != 0:
		if dur < 0 {
			return throttle.Record{}, usagef("--for %s: want a positive duration", dur)
		}
		expires = created.Add(dur)
	default:
		t, err := time.Parse(time.RFC3339, untilText)
		if err != nil {
			return throttle.Record{}, usagef("--until %q: want RFC 3339, e.g. 2030-01-02T15:04:05Z", untilText)
		}
		expires = t.UTC()
	}
	expires = expires.Truncate(time.Millisecond)
	if !expires.After(created) {
		return throttle.Record{}, usagef("throttle would end at %s, not after now (%s)", timeText(expires), timeText(created))
	}
	switch {
	case reason == "":
		return throttle.Record{}, usagef("--reason is required: say why, for the people who will see it")
	case len(reason) > maxNote || !utf8.ValidString(reason):
		return throttle.Record{}, usagef("--reason: want valid UTF-8 of at most %d bytes", maxNote)
	case setBy == "" || len(setBy) > maxSetBy || !utf8.ValidString(setBy):
		return throttle.Record{}, usagef("--set-by: want 1 to %d bytes of valid UTF-8", maxSetBy)
	}
	mode := throttle.ModeEnforce
	if shadow {
		mode = throttle.ModeShadow
	}
	r := throttle.Record{
		ID: uuid.NewString(), Customer: customer, Limit: n, Window: window,
		CreatedAt: created, ExpiresAt: expires,
		Reason: throttle.Reason{Kind: throttle.ReasonManual, Note: reason},
		SetBy:  setBy, Mode: mode,
	}
	if err := r.Validate(); err != nil {
		return throttle.Record{}, usageError{err}
	}
	return r, nil
}

func liftCommand() *command {
	return &command{
		name: "lift", args: "CUSTOMER", nargs: 1, output: true,
		summary: "lift a customer's throttle",
		help: `
Rebuilds the throttle table from the topic, like get, and when the customer has an
active throttle publishes a tombstone for it: the throttle is lifted, at once on every
ingestion replica, and compaction later drops the key. A customer without an active
throttle is left alone ("no throttle for CUSTOMER: nothing to lift", exit 0: the customer
is unthrottled, as asked) and nothing is written.

Reading the topic needs the schema registry; --force publishes the tombstone without
reading the topic first (a tombstone needs no registry), whatever the customer has.`,
		define: func(fs *flag.FlagSet) action {
			force := fs.Bool("force", false, "publish the tombstone without reading the topic first (when the registry is unreachable)")
			return func(ctx context.Context, s *session, args []string) error {
				return s.lift(ctx, args[0], *force)
			}
		},
	}
}

// liftResult is the output of lift --output json.
type liftResult struct {
	Customer string `json:"customer"`
	Topic    string `json:"topic"`
	// Lifted says whether a tombstone was published: the customer had an active throttle,
	// or --force.
	Lifted bool `json:"lifted"`
	// Throttle is the throttle lifted; absent when there was none, or with --force (the
	// topic was not read).
	Throttle *throttlejson.Record `json:"throttle,omitempty"`
}

func (s *session) lift(ctx context.Context, customer string, force bool) error {
	if err := throttle.ValidateCustomer(customer); err != nil {
		return usageError{err}
	}
	res := liftResult{Customer: customer, Topic: s.topic()}
	if !force {
		tb, stop, err := s.readTable(ctx, ctx)
		if err != nil {
			if rd := (registryDown{}); errors.As(err, &rd) || errors.Is(err, throttle.ErrRegistryUnavailable) {
				return fmt.Errorf("%w (lift --force publishes the tombstone without reading the topic)", err)
			}
			return err
		}
		r, ok := tb.Get(customer)
		stop()
		if !ok {
			// Writing a tombstone anyway would change nothing a reader sees: say so, and
			// leave the topic as it is.
			if s.json {
				return writeJSON(s.stdout, res)
			}
			_, err := fmt.Fprintf(s.stdout, "no throttle for %s: nothing to lift\n", customer)
			return err
		}
		rj := throttlejson.From(r)
		res.Throttle = &rj
	}
	// A throttle set since the table was read is lifted too: a tombstone deletes whatever
	// the customer has when readers apply it.
	if err := s.publish(ctx, func(p *throttle.Publisher) error { return p.Lift(ctx, customer) }); err != nil {
		return err
	}
	res.Lifted = true
	if s.json {
		return writeJSON(s.stdout, res)
	}
	_, err := fmt.Fprintf(s.stdout, "lifted throttle of %s\n", customer)
	return err
}

// publish checks the topic, then runs fn with a publisher to it.
func (s *session) publish(ctx context.Context, fn func(*throttle.Publisher) error) error {
	kc, err := s.kafka()
	if err != nil {
		return err
	}
	if _, err := s.checkTopic(ctx, kc, s.topic()); err != nil {
		return err
	}
	codec, err := s.writeCodec(ctx, s.topic())
	if err != nil {
		return err
	}
	p, err := throttle.NewPublisher(kc, s.topic(), codec)
	if err != nil {
		return err
	}
	err = fn(p)
	if cerr := p.Close(); err == nil && cerr != nil {
		err = cerr
	}
	switch {
	case errors.Is(err, throttle.ErrRegistryUnavailable) && ended(ctx):
		return fmt.Errorf("schema registry %s: no answer within the %s timeout: %w", s.cfg.RegistryURL, s.cfg.Timeout, err)
	case errors.Is(err, throttle.ErrRegistryUnavailable):
		return fmt.Errorf("schema registry %s: %w", s.cfg.RegistryURL, err)
	}
	return err
}
