package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// runDemo sends a steady trickle of events for quiet customers and a flood for one noisy
// customer ("acme"), alternating between ingestion replicas, and prints each second how
// many events were accepted and refused per customer. Together with the services' logs
// it shows the throttle appear, the 429s, the expiry and the tombstone.
func runDemo(ctx context.Context, out io.Writer, targets []string) {
	client := &http.Client{Timeout: 5 * time.Second}
	type tally struct{ ok, throttled, other int }
	var mu sync.Mutex
	counts := map[string]*tally{}
	send := func(customer string, i int) {
		body := fmt.Sprintf(`{"customer":%q,"payload":{"seq":%d}}`, customer, i)
		url := targets[i%len(targets)] + "/v1/events"
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewBufferString(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		mu.Lock()
		defer mu.Unlock()
		t := counts[customer]
		if t == nil {
			t = &tally{}
			counts[customer] = t
		}
		switch {
		case err != nil:
			t.other++
		case resp.StatusCode == http.StatusAccepted:
			t.ok++
		case resp.StatusCode == http.StatusTooManyRequests:
			t.throttled++
		default:
			t.other++
		}
		if resp != nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	loop := func(customer string, every time.Duration) {
		defer wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				send(customer, i)
			}
		}
	}
	wg.Add(4)
	go loop("acme", 5*time.Millisecond) // ~200 events/s: the flood
	go loop("globex", 500*time.Millisecond)
	go loop("initech", 700*time.Millisecond)
	go loop("hooli", time.Second)

	report := time.NewTicker(time.Second)
	defer report.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-report.C:
		}
		mu.Lock()
		line := "demo         |"
		for _, c := range []string{"acme", "globex", "initech", "hooli"} {
			if t := counts[c]; t != nil {
				line += fmt.Sprintf(" %s: %d accepted, %d refused 429, %d other;", c, t.ok, t.throttled, t.other)
			}
		}
		counts = map[string]*tally{}
		mu.Unlock()
		fmt.Fprintln(out, line)
	}
}
