package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

func restoreCommand() *command {
	return &command{
		name: "restore", args: "FILE", nargs: 1, output: true,
		summary: "re-publish the throttles of a dump that the topic lacks",
		help: `
Reads a dump (FILE, or - for stdin), works out each customer's throttle at the end of
the dump the way a throttle table would, and re-publishes, unchanged (same id, same
times), each one that has not expired and is newer than what the topic holds now. Use it
to rebuild a topic lost with its cluster: throttlectl ensure-topic, then restore.

What the topic holds now is read from the topic itself, from offset zero. A dump throttle
D is published when the customer's latest state on the topic is:
  - nothing (never seen, or only poison records);
  - a throttle whose created_at is before D's created_at (a throttle with D's id is
    "unchanged" and not written again);
  - a tombstone whose timestamp is before the timestamp of D's record in the dump.
Anything else is "newer" and kept. Nothing is written when the file does not parse.
Running restore twice is harmless: the second run finds everything unchanged.

With --exact the topic ends with exactly the dump's throttles: a dump throttle is
published over a newer one too, and every throttle the topic holds that the dump does not
(lifted or expired in the dump, or never in it) is lifted ("lifted"). That is failback:
bringing a region that was lost back to the state of the region that took over, without
resurrecting what was lifted meanwhile (see deploy/OPERATIONS.md, "A second region").`,
		define: func(fs *flag.FlagSet) action {
			dryRun := fs.Bool("dry-run", false, "say what would be restored, write nothing")
			exact := fs.Bool("exact", false, "make the topic hold exactly the dump's throttles: publish over newer ones, lift the ones the dump does not hold")
			return func(ctx context.Context, s *session, args []string) error {
				return s.restore(ctx, args[0], *dryRun, *exact)
			}
		},
	}
}

// keyState is a customer's state after applying its records in order, by the rules of
// throttle.Table: a throttle replaces, a tombstone deletes unless it is an expiry
// tombstone naming another throttle than the current one, poison is skipped.
type keyState struct {
	customer string
	rec      *throttle.Record // current throttle, possibly expired; nil when deleted
	at       time.Time        // timestamp of the record that set rec, or of the deleting tombstone
	lifted   bool             // deleted by a tombstone
	parts    map[int]bool     // partitions the key was seen on
}

// states folds records into per-customer states.
type states struct {
	byKey  map[string]*keyState
	poison int
}

func newStates() *states { return &states{byKey: map[string]*keyState{}} }

func (st *states) apply(e entry) {
	if e.Poison != "" {
		st.poison++
		return
	}
	k := string(e.Key)
	ks := st.byKey[k]
	if ks == nil {
		ks = &keyState{customer: k, parts: map[int]bool{}}
		st.byKey[k] = ks
	}
	ks.parts[e.Partition] = true
	if e.Tombstone {
		expires := header(e.Headers, throttle.HeaderExpires)
		if expires != "" && ks.rec != nil && ks.rec.ID != expires {
			return // a stale expiry tombstone: readers keep the current throttle
		}
		ks.rec, ks.at, ks.lifted = nil, e.Time, true
		return
	}
	ks.rec, ks.at, ks.lifted = e.Record, e.Time, false
}

func header(hs []kafka.Header, key string) string {
	for _, h := range hs {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// Restore actions, per customer of the dump.
const (
	actRestored = "restored"
	actSame     = "unchanged"
	actNewer    = "skipped-newer"
	actExpired  = "skipped-expired"
	actLifted   = "skipped-lifted" // the dump ends with a tombstone: nothing to restore
	actLift     = "lifted"         // --exact: the topic's throttle is not in the dump
)

// decide says what restore does with a customer whose state in the dump is d, given its
// state on the target topic (nil: never seen there).
func decide(d, target *keyState, now time.Time) string {
	switch {
	case d.rec == nil:
		return actLifted
	case !d.rec.Active(now):
		return actExpired
	case target == nil:
		return actRestored
	case target.rec != nil && target.rec.ID == d.rec.ID:
		return actSame
	case target.rec != nil && target.rec.CreatedAt.Before(d.rec.CreatedAt):
		return actRestored
	case target.rec == nil && target.lifted && target.at.Before(d.at):
		return actRestored
	}
	return actNewer
}

type restoreResult struct {
	Topic   string         `json:"topic"`
	DryRun  bool           `json:"dry_run"`
	Counts  map[string]int `json:"counts"`
	Poison  int            `json:"poison_in_dump"`
	Actions []restoreItem  `json:"actions"`
}

type restoreItem struct {
	Customer string `json:"customer"`
	Action   string `json:"action"`
	ID       string `json:"id,omitempty"`
}

func (s *session) restore(ctx context.Context, file string, dryRun, exact bool) error {
	dump, err := s.readDump(file)
	if err != nil {
		return err
	}
	kc, err := s.kafka()
	if err != nil {
		return err
	}
	if _, err := s.checkTopic(ctx, kc, s.topic()); err != nil {
		return err
	}
	codec, err := s.codec(s.topic())
	if err != nil {
		return err
	}
	target := newStates()
	if _, err := scanTopic(ctx, kc, s.topic(), codec, func(e entry) error { target.apply(e); return nil }); err != nil {
		return s.scanErr(fmt.Errorf("read target topic %s: %w", s.topic(), err))
	}

	now := s.now()
	res := restoreResult{Topic: s.topic(), DryRun: dryRun, Poison: dump.poison, Actions: []restoreItem{},
		Counts: map[string]int{actRestored: 0, actSame: 0, actNewer: 0, actExpired: 0, actLifted: 0}}
	if exact {
		res.Counts[actLift] = 0
	}
	var publish []throttle.Record
	var lift []string
	for _, k := range sortedKeys(target.byKey) {
		if t := target.byKey[k]; exact && t.rec != nil && t.rec.Active(now) {
			if d := dump.byKey[k]; d == nil || d.rec == nil || !d.rec.Active(now) {
				lift = append(lift, k)
				res.Actions = append(res.Actions, restoreItem{Customer: k, Action: actLift, ID: t.rec.ID})
				res.Counts[actLift]++
			}
		}
	}
	for _, k := range sortedKeys(dump.byKey) {
		d := dump.byKey[k]
		if len(d.parts) > 1 {
			fmt.Fprintf(s.stderr, "warning: customer %q is on %d partitions in the dump; its records were applied in file order\n", k, len(d.parts))
		}
		act := decide(d, target.byKey[k], now)
		if exact && act == actNewer {
			act = actRestored // the dump wins
		}
		item := restoreItem{Customer: k, Action: act}
		if d.rec != nil {
			item.ID = d.rec.ID
		}
		res.Actions = append(res.Actions, item)
		res.Counts[act]++
		if act == actRestored {
			publish = append(publish, *d.rec)
		}
	}
	if !dryRun && len(publish)+len(lift) > 0 {
		done := 0
		err := s.publish(ctx, func(p *throttle.Publisher) error {
			for _, r := range publish {
				if err := p.Set(ctx, r); err != nil {
					return err
				}
				done++
			}
			for _, c := range lift {
				if err := p.Lift(ctx, c); err != nil {
					return err
				}
				done++
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("wrote %d of %d throttles and lifts (running restore again is safe): %w", done, len(publish)+len(lift), err)
		}
	}
	if s.json {
		return writeJSON(s.stdout, res)
	}
	return printRestore(s.stdout, res)
}

func printRestore(w io.Writer, res restoreResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, a := range res.Actions {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", a.Action, a.Customer, a.ID)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	verb := "restored"
	if res.DryRun {
		verb = "would restore"
	}
	lifted := ""
	if n, ok := res.Counts[actLift]; ok {
		lifted = fmt.Sprintf(", lifted %d", n)
	}
	_, err := fmt.Fprintf(w, "%s %d, unchanged %d, skipped-newer %d, skipped-expired %d, skipped-lifted %d%s, poison in dump %d (topic %s)\n",
		verb, res.Counts[actRestored], res.Counts[actSame], res.Counts[actNewer], res.Counts[actExpired], res.Counts[actLifted], lifted, res.Poison, res.Topic)
	return err
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// readDump reads and folds a whole dump before anything is written, so a file that does
// not parse changes nothing.
func (s *session) readDump(file string) (*states, error) {
	var in io.Reader
	name := file
	if file == "-" {
		in, name = s.stdin, "stdin"
		if in == nil {
			return nil, errors.New("read dump from stdin: no stdin")
		}
	} else {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("read dump: %w", err)
		}
		defer f.Close()
		in = f
	}
	st := newStates()
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20) // a line holds one record, at most a few MB raw
	for n := 1; sc.Scan(); n++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		e, err := parseDumpLine(sc.Bytes())
		if err != nil {
			return nil, fmt.Errorf("read dump %s: line %d: %w", name, n, err)
		}
		st.apply(e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read dump %s: %w", name, err)
	}
	return st, nil
}

func parseDumpLine(b []byte) (entry, error) {
	var l dumpLine
	// Unknown fields are ignored, as the codec ignores fields it does not know: a dump
	// from a newer throttlectl still restores.
	if err := json.Unmarshal(b, &l); err != nil {
		return entry{}, fmt.Errorf("not a dump line: %w", err)
	}
	e := entry{Partition: l.Partition, Offset: l.Offset, Time: l.Timestamp, Tombstone: l.Tombstone, Poison: l.Poison}
	switch {
	case l.Key != nil:
		e.Key = []byte(*l.Key)
	case l.KeyBase64 != "":
		k, err := base64.StdEncoding.DecodeString(l.KeyBase64)
		if err != nil {
			return entry{}, fmt.Errorf("key_base64: %w", err)
		}
		e.Key = k
	}
	for _, h := range l.Headers {
		v := []byte(h.Value)
		if h.ValueBase64 != "" {
			var err error
			if v, err = base64.StdEncoding.DecodeString(h.ValueBase64); err != nil {
				return entry{}, fmt.Errorf("header %s: value_base64: %w", h.Key, err)
			}
		}
		e.Headers = append(e.Headers, kafka.Header{Key: h.Key, Value: v})
	}
	kinds := 0
	for _, set := range []bool{l.Value != nil, l.Tombstone, l.Poison != ""} {
		if set {
			kinds++
		}
	}
	if kinds != 1 {
		return entry{}, errors.New("want exactly one of value, tombstone and poison")
	}
	if l.Poison != "" {
		return e, nil
	}
	if l.Timestamp.IsZero() {
		return entry{}, errors.New("timestamp missing")
	}
	if e.Key == nil {
		// The topic is compacted: Kafka refuses records without a key there.
		return entry{}, errors.New("key missing")
	}
	if l.Value != nil {
		r, err := l.Value.Record()
		if err != nil {
			return entry{}, fmt.Errorf("value: %w", err)
		}
		if r.Customer != string(e.Key) {
			// What a table does with it: skip it as poison.
			e.Poison = "key_mismatch"
			return e, nil
		}
		e.Record = &r
	}
	return e, nil
}
