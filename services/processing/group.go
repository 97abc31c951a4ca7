package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// group owns a set of long-running goroutines. Any of them returning before it was asked
// to stop is a failure of the service, reported on Stopped.
type group struct {
	wg      sync.WaitGroup
	stopped chan error

	mu   sync.Mutex
	errs []error
}

func newGroup() *group { return &group{stopped: make(chan error, 16)} }

// Go runs f under name.
func (g *group) Go(name string, f func() error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		err := f()
		if err != nil {
			err = fmt.Errorf("%s: %w", name, err)
			g.mu.Lock()
			g.errs = append(g.errs, err)
			g.mu.Unlock()
		} else {
			err = fmt.Errorf("%s stopped", name)
		}
		select {
		case g.stopped <- err:
		default:
		}
	}()
}

// Stopped delivers an error for each goroutine that returns. While the service runs,
// any of them is a failure.
func (g *group) Stopped() <-chan error { return g.stopped }

// Wait waits for every goroutine, or for ctx, and returns the errors they returned.
func (g *group) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("wait for goroutines: %w", ctx.Err())
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return errors.Join(g.errs...)
}
