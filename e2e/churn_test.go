package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

// churn sets and lifts throttles of its own customers through the admin API, one
// request at a time, while a fault happens, and keeps what was acknowledged: the model
// the log, processing and every replica must equal afterwards. A request that gets no
// acknowledgement may still take effect (the admin API says so), so it is retried as a
// client would, the same request again (a set with the same client-chosen id) until it
// is acknowledged; only then does the churn move on. A customer whose request is never
// acknowledged within a minute is counted as unknown and left unchecked.
type churn struct {
	s     *stack
	names []string

	mu      sync.Mutex
	want    map[string]string // customer → id of its acknowledged throttle, "" once lifted
	unknown map[string]bool
	acks    []ack
	retries int // requests that failed and were sent again
}

type ack struct {
	at       time.Time
	customer string
}

func newChurn(s *stack, prefix string, customers int) *churn {
	c := &churn{s: s, want: map[string]string{}, unknown: map[string]bool{}}
	for i := range customers {
		c.names = append(c.names, fmt.Sprintf("%s-%03d", prefix, i))
	}
	return c
}

// run churns until ctx ends: mostly sets (a new throttle replaces the customer's
// current one), a lift for one in four customers that have a throttle.
func (c *churn) run(ctx context.Context) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	for n := 0; ctx.Err() == nil; n++ {
		name := c.names[rng.IntN(len(c.names))]
		c.mu.Lock()
		skip, current := c.unknown[name], c.want[name]
		c.mu.Unlock()
		if skip {
			continue
		}
		lift := current != "" && rng.IntN(4) == 0
		id := fmt.Sprintf("%s-%d", name, n)
		send := func(ctx context.Context) error {
			if lift {
				return c.s.tryLift(ctx, name)
			}
			_, err := c.s.trySet(ctx, setRequest{ID: id, Customer: name, Limit: 1000, Window: "1m", Duration: "30m", Reason: "e2e: churn"})
			return err
		}
		if lift {
			id = ""
		}
		giveUp := time.Now().Add(time.Minute)
		for {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			err := send(rctx)
			cancel()
			gaveUp := err != nil && time.Now().After(giveUp)
			c.mu.Lock()
			switch {
			case err == nil:
				c.want[name] = id
				c.acks = append(c.acks, ack{time.Now(), name})
			case gaveUp:
				c.unknown[name] = true
			default:
				c.retries++
			}
			c.mu.Unlock()
			if err == nil || gaveUp {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// start runs the churn in the background; the returned function stops it once the
// request in flight is acknowledged, and waits.
func (c *churn) start() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// acksBetween counts the acknowledgements between from and to for customers that match,
// and returns the longest time without any acknowledgement (of any customer) there.
func (c *churn) acksBetween(from, to time.Time, match func(customer string) bool) (n int, longestPause time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	last := from
	for _, a := range c.acks {
		if a.at.Before(from) || a.at.After(to) {
			continue
		}
		longestPause = max(longestPause, a.at.Sub(last))
		last = a.at
		if match(a.customer) {
			n++
		}
	}
	return n, max(longestPause, to.Sub(last))
}

// summary counts the acknowledged and the retried requests.
func (c *churn) summary() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("%d writes acknowledged, %d attempts retried, %d customers of %d never acknowledged within a minute",
		len(c.acks), c.retries, len(c.unknown), len(c.names))
}

// verify checks every acknowledged outcome: the log replayed, processing's table and
// every replica's give each checked customer exactly its last acknowledged throttle, or
// none after a lift.
func (c *churn) verify(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	want := map[string]string{}
	for name, id := range c.want {
		if !c.unknown[name] {
			want[name] = id
		}
	}
	unknown := len(c.unknown)
	c.mu.Unlock()
	if len(want) == 0 {
		t.Fatal("churn: not one write was acknowledged")
	}
	if unknown > 0 {
		t.Errorf("churn: %d customers' requests never acknowledged within a minute of retries", unknown)
	}
	// The log, read from the partitions' leaders. Retried: right after a fault a client
	// can still be pointed at a broker that no longer leads (a cut-off one that has just
	// come back), and reads what it holds.
	codec := c.s.codec(t)
	took := eventually(t, time.Minute, time.Second, "the log holds every acknowledged outcome", func(ctx context.Context) (bool, string) {
		d, err := c.s.dump(ctx, throttle.DefaultTopic)
		if err != nil {
			return false, err.Error()
		}
		model, _, err := replay(d, codec, time.Now())
		if err != nil {
			return false, err.Error()
		}
		have := map[string]string{}
		for name, r := range model {
			have[name] = r.ID
		}
		return sameOutcomes(want, have)
	})
	if took > 2*time.Second {
		report(t, "the log read from the leaders held every acknowledged outcome only %s after the first try", round(took))
	}
	eventually(t, time.Minute, 200*time.Millisecond, "processing has every acknowledged outcome", func(ctx context.Context) (bool, string) {
		list, err := c.s.adminList(ctx)
		if err != nil {
			return false, err.Error()
		}
		have := map[string]string{}
		for _, a := range list {
			have[a.Customer] = a.ID
		}
		return sameOutcomes(want, have)
	})
	for i, base := range c.s.bases(t) {
		eventually(t, time.Minute, 200*time.Millisecond, fmt.Sprintf("replica %d has every acknowledged outcome", i+1), func(ctx context.Context) (bool, string) {
			v, err := view(ctx, base)
			if err != nil {
				return false, err.Error()
			}
			have := map[string]string{}
			for _, th := range v.Throttles {
				have[th.Customer] = th.ID
			}
			return sameOutcomes(want, have)
		})
	}
	if !t.Failed() {
		report(t, "0 acknowledged outcomes lost: %d customers' last acknowledged state is on the log, in processing and on every replica", len(want))
	}
}

func sameOutcomes(want, have map[string]string) (bool, string) {
	for name, id := range want {
		if have[name] != id {
			return false, fmt.Sprintf("%s: have %q, want %q", name, have[name], id)
		}
	}
	return true, ""
}

// traffic samples the services from outside while a fault happens: a throttled
// customer's events (each must be refused), a bystander's events, and /readyz, on every
// replica in turn.
type traffic struct {
	stop    context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	samples []sample
}

type sample struct {
	at      time.Time
	replica int
	what    string // "throttled", "bystander" or "readyz"
	status  int
}

func startTraffic(bases []string, throttled, bystander string) *traffic {
	ctx, cancel := context.WithCancel(context.Background())
	tr := &traffic{stop: cancel}
	every := func(d time.Duration, what string, f func(ctx context.Context, base string) int) {
		tr.wg.Go(func() {
			tick := time.NewTicker(d)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				r := i % len(bases)
				// A request may wait up to WRITE_TIMEOUT while Kafka is away: do not let
				// one slow answer hold up the next.
				tr.wg.Go(func() {
					status := f(ctx, bases[r])
					if ctx.Err() != nil {
						return
					}
					tr.mu.Lock()
					tr.samples = append(tr.samples, sample{time.Now(), r, what, status})
					tr.mu.Unlock()
				})
			}
		})
	}
	every(50*time.Millisecond, "throttled", func(ctx context.Context, b string) int { return postEvent(ctx, b, throttled) })
	every(100*time.Millisecond, "bystander", func(ctx context.Context, b string) int { return postEvent(ctx, b, bystander) })
	every(100*time.Millisecond, "readyz", readyz)
	return tr
}

// halt stops the traffic and waits for the requests in flight.
func (tr *traffic) halt() {
	tr.stop()
	tr.wg.Wait()
}

// check fails t for every answer to the throttled customer that was not 429, and
// returns the status counts per kind, over the whole run and between from and to.
func (tr *traffic) check(t *testing.T, from, to time.Time) (all, during map[string]map[int]int) {
	t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	all, during = map[string]map[int]int{}, map[string]map[int]int{}
	for _, smp := range tr.samples {
		if all[smp.what] == nil {
			all[smp.what], during[smp.what] = map[int]int{}, map[int]int{}
		}
		all[smp.what][smp.status]++
		if smp.at.After(from) && smp.at.Before(to) {
			during[smp.what][smp.status]++
		}
		if smp.what == "throttled" && smp.status != http.StatusTooManyRequests {
			t.Errorf("throttled customer on replica %d at %s (fault from %s to %s): got status %d, want 429",
				smp.replica+1, smp.at.Format("15:04:05.000"), from.Format("15:04:05.000"), to.Format("15:04:05.000"), smp.status)
		}
	}
	if during["throttled"][http.StatusTooManyRequests] == 0 {
		t.Errorf("no request of the throttled customer was answered during the fault")
	}
	return all, during
}

// enforced sets a throttle of two events an hour for customer and uses them up on every
// replica, so that each of its later events must be refused.
func (s *stack) enforced(t *testing.T, customer string) adminThrottle {
	t.Helper()
	bases := s.bases(t)
	th := s.setThrottle(t, setRequest{Customer: customer, Limit: 2, Window: "1h", Duration: "30m"})
	s.throttled = customer
	waitVisible(t, bases, customer, th.ID, 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, b := range bases {
		for n := 0; postEvent(ctx, b, customer) != http.StatusTooManyRequests; n++ {
			if n > 5 {
				t.Fatalf("replica %d never refused %s", i+1, customer)
			}
		}
	}
	return th
}
