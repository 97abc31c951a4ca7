package main

import (
	"context"
	"fmt"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
	"github.com/sluice-dev/sluice/pkg/throttle/expiry"
	"github.com/sluice-dev/sluice/services/processing/internal/admin"
	"github.com/sluice-dev/sluice/services/processing/internal/autothrottle"
	"github.com/sluice-dev/sluice/services/processing/internal/config"
)

// throttleTopic is what run needs from pkg/throttle: a way to write throttles, this
// replica's copy of the throttle topic, and the goroutines that keep them going.
type throttleTopic struct {
	// publisher writes throttle records and tombstones (throttle.Publisher).
	publisher admin.Publisher
	// table is the throttle topic read from offset zero and tailed (throttle.Table).
	table admin.Table
	// runners are blocking Run(ctx) loops that run owns: the table's and the expiry
	// sweeper's. Each returns nil when ctx is done.
	runners map[string]func(ctx context.Context) error
	// close flushes and closes the publisher, after the runners have stopped.
	close func() error
}

// newThrottleTopic builds this replica's throttle publisher, its table of the throttle
// topic and the expiry sweeper that tombstones expired throttles (see expiry.Sweeper
// for why a tombstone never removes a newer throttle).
//
// run waits for table.Ready before it consumes, so that the controller sees the
// throttles that already exist and renews them instead of setting duplicates.
func newThrottleTopic(kc cluster.Config, cfg config.Config, codec *throttle.Codec, log *zap.Logger) (*throttleTopic, error) {
	pub, err := throttle.NewPublisher(kc, cfg.ThrottleTopic, codec)
	if err != nil {
		return nil, fmt.Errorf("new throttle publisher: %w", err)
	}
	// The table's observer feeds the sweeper, which needs the table: tie the knot
	// through a pointer set once both exist, before anything runs.
	var sweeper atomic.Pointer[expiry.Sweeper]
	table, err := throttle.NewTable(kc, cfg.ThrottleTopic, codec,
		throttle.WithLogger(log),
		throttle.WithObserver(func(c throttle.Change) {
			if s := sweeper.Load(); s != nil {
				s.Observe(c)
			}
			if !c.Rebuilding {
				log.Info("throttle change", zap.String("change", c.Kind.String()), zap.String("customer", c.Customer),
					zap.String("throttle_id", c.Record.ID), zap.Int64("limit", c.Record.Limit),
					zap.Int("partition", c.Partition), zap.Int64("offset", c.Offset), zap.Duration("age", c.Age))
			}
		}))
	if err != nil {
		_ = pub.Close()
		return nil, fmt.Errorf("new throttle table: %w", err)
	}
	sw, err := expiry.New(pub, table, expiry.WithGrace(cfg.SweepGrace), expiry.WithLogger(log))
	if err != nil {
		_ = pub.Close()
		return nil, fmt.Errorf("new expiry sweeper: %w", err)
	}
	sweeper.Store(sw)
	return &throttleTopic{
		publisher: pub,
		table:     table,
		runners:   map[string]func(context.Context) error{"throttle table": table.Run, "expiry sweeper": sw.Run},
		close:     pub.Close,
	}, nil
}

// forgetOnLift tells the controller when an operator lifts a throttle through this
// replica, so it does not count the lifted throttle as expired later.
type forgetOnLift struct {
	admin.Publisher
	ctrl *autothrottle.Controller
}

func (f forgetOnLift) Lift(ctx context.Context, customer string) error {
	if err := f.Publisher.Lift(ctx, customer); err != nil {
		return err
	}
	f.ctrl.Forget(customer)
	return nil
}
