// Package throttlefake is an in-memory stand-in for the throttle topic, its Publisher
// and its Table, for the tests of the processing service. It implements the small
// interfaces that autothrottle and admin declare.
package throttlefake

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

// ErrInjected is what a Set or Lift returns while failures are injected.
var ErrInjected = errors.New("throttlefake: injected failure")

// Topic records every write and answers lookups from the latest one per customer.
type Topic struct {
	mu      sync.Mutex
	now     func() time.Time
	lag     time.Duration
	notRdy  bool
	fail    int
	current map[string]entry
	sets    []throttle.Record
	lifts   []string
	calls   int
}

type entry struct {
	rec     throttle.Record
	visible time.Time // when Get starts to see it (a table that lags the topic)
}

// New returns an empty, ready store reading the time from now.
func New(now func() time.Time) *Topic {
	return &Topic{now: now, current: map[string]entry{}}
}

// SetLag makes writes visible to Get and Active only lag after they were made, like a
// table reading the topic back.
func (s *Topic) SetLag(lag time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lag = lag
}

// SetReady sets what Ready answers.
func (s *Topic) SetReady(ready bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notRdy = !ready
}

// FailNext makes the next n Set or Lift calls fail with ErrInjected.
func (s *Topic) FailNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = n
}

// Put places r in the table directly, as if read from the topic (no Set recorded).
func (s *Topic) Put(r throttle.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.current[r.Customer] = entry{rec: r}
}

// Set implements the publishers' Set. It rejects invalid records as the codec would.
func (s *Topic) Set(ctx context.Context, r throttle.Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.fail > 0 {
		s.fail--
		return ErrInjected
	}
	if err := r.Validate(); err != nil {
		return err
	}
	s.sets = append(s.sets, r)
	s.current[r.Customer] = entry{rec: r, visible: s.now().Add(s.lag)}
	return nil
}

// Lift implements the publishers' Lift.
func (s *Topic) Lift(ctx context.Context, customer string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.fail > 0 {
		s.fail--
		return ErrInjected
	}
	s.lifts = append(s.lifts, customer)
	delete(s.current, customer)
	return nil
}

// Get implements the tables' Get: the customer's latest visible record, active or
// not (the sweeper removes expired ones).
func (s *Topic) Get(customer string) (throttle.Record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.current[customer]
	if !ok || s.now().Before(e.visible) {
		return throttle.Record{}, false
	}
	return e.rec, true
}

// Active implements the tables' Active.
func (s *Topic) Active() []throttle.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var out []throttle.Record
	for _, e := range s.current {
		if !now.Before(e.visible) && e.rec.Active(now) {
			out = append(out, e.rec)
		}
	}
	return out
}

// Ready implements the tables' Ready.
func (s *Topic) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.notRdy
}

// Sets returns the records written by Set, in order.
func (s *Topic) Sets() []throttle.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]throttle.Record(nil), s.sets...)
}

// SetsFor returns the records written for customer, in order.
func (s *Topic) SetsFor(customer string) []throttle.Record {
	var out []throttle.Record
	for _, r := range s.Sets() {
		if r.Customer == customer {
			out = append(out, r)
		}
	}
	return out
}

// Lifts returns the customers lifted, in order.
func (s *Topic) Lifts() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lifts...)
}

// Calls counts Set and Lift calls, failed ones included.
func (s *Topic) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}
