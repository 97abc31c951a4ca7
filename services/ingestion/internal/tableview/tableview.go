// Package tableview is what ingestion needs from the throttle table, written in
// ingestion's own types so every internal package builds and tests against fakes
// without depending on the table's concrete type. main adapts *throttle.Table to it.
package tableview

import "github.com/sluice-dev/sluice/pkg/throttle"

// Table is the throttle table as ingestion uses it.
type Table interface {
	// Ready reports whether the table has caught up with the throttle topic; before
	// that, Lookup, Get and Active return nothing.
	Ready() bool
	// Lookup returns what enforcing the customer's active throttle needs. Called for
	// every request: it must not block or allocate.
	Lookup(customer string) (throttle.Rule, bool)
	// Get returns the customer's active throttle as a full record, for the views.
	Get(customer string) (throttle.Record, bool)
	// Active returns every active throttle, ordered by customer.
	Active() []throttle.Record
	// Stats returns the table's freshness figures.
	Stats() Stats
}

// Stats describes the table: whether it caught up, whether the broker answers, and how
// far each partition is behind.
type Stats struct {
	Ready bool
	// Fresh is false while the broker cannot be reached: the table then serves the
	// throttles it last knew.
	Fresh      bool
	Active     int
	Partitions []Partition
	// Poison counts skipped records by reason.
	Poison map[string]int64
}

// Partition is one partition's reading progress.
type Partition struct {
	Partition     int
	Position      int64 // next offset to read
	End           int64 // the end offset to reach to count as caught up (taken at start)
	HighWatermark int64
	CaughtUp      bool
	// Waiting says the partition is held at the record at WaitingOffset until its schema
	// can be fetched (the registry is away).
	Waiting        bool
	WaitingOffset  int64
	SkippedOffsets int64 // offsets removed below the log start before they were read
}

// Lag is how many offsets the partition is behind its high watermark.
func (p Partition) Lag() int64 { return max(p.HighWatermark-p.Position, 0) }
