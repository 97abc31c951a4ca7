package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/throttlejson"
)

func listCommand() *command {
	return &command{
		name: "list", summary: "print the active throttles", output: true,
		help: `
Rebuilds the throttle table from the topic (every partition from offset zero, up to the
end offsets taken at start), exactly as an ingestion replica does, and prints the active
throttles ordered by customer. Expired throttles and lifted ones are not shown.`,
		define: func(*flag.FlagSet) action {
			return func(ctx context.Context, s *session, _ []string) error {
				tb, stop, err := s.readTable(ctx, ctx)
				if err != nil {
					return err
				}
				recs := tb.Active()
				stop()
				if s.json {
					out := make([]throttlejson.Record, 0, len(recs))
					for _, r := range recs {
						out = append(out, throttlejson.From(r))
					}
					return writeJSON(s.stdout, out)
				}
				if len(recs) == 0 {
					_, err := fmt.Fprintf(s.stdout, "no active throttles on topic %s\n", s.topic())
					return err
				}
				return printTable(s.stdout, recs, s.now())
			}
		},
	}
}

func getCommand() *command {
	return &command{
		name: "get", args: "CUSTOMER", nargs: 1, summary: "print one customer's active throttle", output: true,
		help: `
Rebuilds the throttle table from the topic, like list, and prints the customer's active
throttle. The customer id is matched byte for byte (no case folding, no trimming). Exits
with 3 when the customer has no active throttle.`,
		define: func(*flag.FlagSet) action {
			return func(ctx context.Context, s *session, args []string) error {
				customer := args[0]
				if err := throttle.ValidateCustomer(customer); err != nil {
					return usageError{err}
				}
				tb, stop, err := s.readTable(ctx, ctx)
				if err != nil {
					return err
				}
				r, ok := tb.Get(customer)
				stop()
				if !ok {
					return fmt.Errorf("customer %q has no active throttle on topic %s: %w", customer, s.topic(), errNotFound)
				}
				if s.json {
					return writeJSON(s.stdout, throttlejson.From(r))
				}
				return printRecord(s.stdout, r, s.now())
			}
		},
	}
}
