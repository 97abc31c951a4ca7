package main

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/services/ingestion/internal/config"
	"github.com/sluice-dev/sluice/services/ingestion/internal/metrics"
)

// newTable builds the throttle table, with its changes logged and counted, and the
// function that runs it: it reads the topic until its ctx ends (waiting, with retries,
// for the topic to exist). The packages that use the table take the small interfaces
// they need (server.Table, limit.Table), so that their tests use fakes.
func newTable(cfg config.Config, kc cluster.Config, log *zap.Logger, m *metrics.Metrics) (*throttle.Table, func(context.Context) error, error) {
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
	return t, t.Run, nil
}
