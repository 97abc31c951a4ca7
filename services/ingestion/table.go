package main

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/services/ingestion/internal/config"
	"github.com/sluice-dev/sluice/services/ingestion/internal/metrics"
	"github.com/sluice-dev/sluice/services/ingestion/internal/tableview"
)

// newTable is the seam where the throttle table is built: everything else in ingestion
// sees it only as a tableview.Table, and runs it with the returned function, which reads
// the topic until its ctx ends (waiting, with retries, for the topic to exist).
//
// It is the only place that depends on *throttle.Table's concrete API (NewTable, Run,
// WithObserver, Change, TableStats); tableAdapter turns its Stats into ingestion's.
func newTable(cfg config.Config, kc throttle.KafkaConfig, log *zap.Logger, m *metrics.Metrics) (tableview.Table, func(context.Context) error, error) {
	codec, err := throttle.NewCodec(cfg.Registry(), cfg.ThrottleTopic)
	if err != nil {
		return nil, nil, fmt.Errorf("throttle table: %w", err)
	}
	tlog := log.Named("table")
	t, err := throttle.NewTable(kc, cfg.ThrottleTopic, codec,
		throttle.WithLogger(tlog),
		throttle.WithObserver(func(c throttle.Change) {
			m.ThrottleChanged(c.Kind.String(), c.Age, c.Rebuilding)
			if c.Rebuilding {
				return // a rebuild replays history; the table logs when it has caught up
			}
			tlog.Info("throttle changed", zap.String("change", c.Kind.String()),
				zap.String("customer", c.Customer), zap.String("throttle_id", c.Record.ID),
				zap.Int64("limit", c.Record.Limit), zap.Duration("window", c.Record.Window),
				zap.String("mode", c.Record.Mode.String()), zap.Time("expires_at", c.Record.ExpiresAt),
				zap.Int("partition", c.Partition), zap.Int64("offset", c.Offset), zap.Duration("age", c.Age))
		}))
	if err != nil {
		return nil, nil, fmt.Errorf("throttle table: %w", err)
	}
	return tableAdapter{t}, t.Run, nil
}

// tableAdapter is *throttle.Table with its Stats in ingestion's terms.
type tableAdapter struct{ *throttle.Table }

func (a tableAdapter) Stats() tableview.Stats {
	s := a.Table.Stats()
	out := tableview.Stats{Ready: s.Ready, Fresh: s.Fresh, Active: s.Active, Poison: s.Poison}
	for _, p := range s.Partitions {
		out.Partitions = append(out.Partitions, tableview.Partition{
			Partition: p.Partition, Position: p.Position, End: p.End, HighWatermark: p.HighWatermark, CaughtUp: p.CaughtUp,
			Waiting: p.Waiting >= 0, WaitingOffset: p.Waiting, SkippedOffsets: p.SkippedOffsets,
		})
	}
	return out
}
