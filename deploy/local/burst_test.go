package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Issue 18, end to end through the local stack of `make run`: a burst of 50,000 events
// from 50 equal customers, posted to both ingestion replicas, is processed at the rate of
// the processing benchmark (it keeps pace with ingestion), and no one is throttled.
func TestBurstThroughTheLocalStack(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the services: not in -short")
	}
	t.Chdir("../..") // the program builds the services from the repository root
	pport, i1, i2 := freePort(t), freePort(t), freePort(t)
	t.Setenv("ADMIN_TOKEN", "burst-token")
	start(t, []string{"-data-dir", t.TempDir(), "-kafka-port", "0", "-registry-port", "0",
		"-processing-port", strconv.Itoa(pport), "-ingestion-port", strconv.Itoa(i1), "-ingestion-port-2", strconv.Itoa(i2)},
		regexp.MustCompile(`^Ctrl-C stops everything`))
	admin := fmt.Sprintf("http://127.0.0.1:%d", pport)
	ingest := []string{fmt.Sprintf("http://127.0.0.1:%d", i1), fmt.Sprintf("http://127.0.0.1:%d", i2)}
	for _, u := range append([]string{admin}, ingest...) {
		deadline := time.Now().Add(2 * time.Minute)
		for {
			resp, err := http.Get(u + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not ready after 2 minutes", u)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	handled := func() float64 {
		resp, err := http.Get(admin + "/metrics")
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), `sluice_processing_events_total{outcome="handled"} `); ok {
				f, _ := strconv.ParseFloat(v, 64)
				return f
			}
		}
		return 0
	}
	before := handled()

	const total, perRequest, customers, clients = 50_000, 100, 50, 8
	var accepted atomic.Int64
	begin := time.Now()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := c; r < total/perRequest; r += clients {
				var body bytes.Buffer
				body.WriteByte('[')
				for i := range perRequest {
					if i > 0 {
						body.WriteByte(',')
					}
					fmt.Fprintf(&body, `{"customer":"burst-%02d","id":"%d-%d"}`, r%customers, r, i)
				}
				body.WriteByte(']')
				for {
					resp, err := http.Post(ingest[r%2]+"/v1/events", "application/json", bytes.NewReader(body.Bytes()))
					if err == nil {
						resp.Body.Close()
						if resp.StatusCode == http.StatusAccepted {
							accepted.Add(perRequest)
							break
						}
					}
					time.Sleep(10 * time.Millisecond) // 503 with Retry-After: try again
				}
			}
		}()
	}
	wg.Wait()
	acceptedIn := time.Since(begin)
	deadline := time.Now().Add(2 * time.Minute)
	for handled()-before < total {
		if time.Now().After(deadline) {
			t.Fatalf("processed %.0f of %d events 2 minutes after the burst was accepted", handled()-before, total)
		}
		time.Sleep(20 * time.Millisecond)
	}
	processedIn := time.Since(begin)
	req, _ := http.NewRequest("GET", admin+"/v1/throttles", nil)
	req.Header.Set("Authorization", "Bearer burst-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var list bytes.Buffer
	_, _ = list.ReadFrom(resp.Body)
	resp.Body.Close()
	if strings.Contains(list.String(), "burst-") {
		t.Errorf("got throttles %s, want none: the customers are equal", list.String())
	}
	t.Logf("local stack: %d events accepted in %v (%.0f events/s); all processed %v after the first post (%.0f events/s), %v after the last was accepted",
		accepted.Load(), acceptedIn.Round(time.Millisecond), float64(total)/acceptedIn.Seconds(),
		processedIn.Round(time.Millisecond), float64(total)/processedIn.Seconds(), (processedIn - acceptedIn).Round(time.Millisecond))
}
