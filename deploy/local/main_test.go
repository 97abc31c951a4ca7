package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
)

func TestRunRefusesBadFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"stray argument", []string{"healthcheck"}, "unexpected arguments"},
		{"unknown mode", []string{"-mode", "everything"}, "-mode"},
		{"demo without services", []string{"-mode", "infra", "-demo"}, "-demo needs -mode all"},
		{"every interface, no advertised host", []string{"-mode", "broker", "-host", "0.0.0.0"}, "needs -advertised-host"},
		{"no compaction interval", []string{"-compact-every", "0s"}, "-compact-every"},
		{"registry without a broker", []string{"-mode", "registry"}, "-mode registry needs -kafka host:port"},
		{"broker for another mode", []string{"-mode", "infra", "-kafka", "127.0.0.1:9092"}, "-kafka goes only with -mode registry: -mode infra runs its own broker"},
		{"read-only for another mode", []string{"-mode", "infra", "-read-only"}, "-read-only goes only with -mode registry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run(context.Background(), tc.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run(%q): got %v, want an error containing %q", tc.args, err, tc.want)
			}
		})
	}
}

// start runs the program with args until the test ends, and returns the first line it
// prints that matches re, with its submatches.
func start(t *testing.T, args []string, re *regexp.Regexp) []string {
	t.Helper()
	m, _ := startStoppable(t, args, re)
	return m
}

// startStoppable is start that also returns a function that stops the program and
// waits for it (called when the test ends otherwise).
func startStoppable(t *testing.T, args []string, re *regexp.Regexp) ([]string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, args, pw)
		pw.Close()
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run(%q) returned %v, want nil on cancellation", args, err)
			}
		})
	}
	t.Cleanup(stop)
	found := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m:
				default:
				}
			}
		}
	}()
	select {
	case m := <-found:
		return m, stop
	case err := <-done:
		t.Fatalf("run(%q) ended early: %v", args, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("run(%q) never printed a line matching %s", args, re)
	}
	return nil, stop
}

// registryLine is what -mode registry prints once it serves.
var registryLine = regexp.MustCompile(`^Schema Registry listening on (\S+) \(schema id (\d+)`)

// TestRegistryMode: -mode registry keeps its schemas in the broker -kafka names. A
// schema registered after the throttle schema keeps its id and version when the
// registry restarts, so records written with it still decode; and an incompatible one
// is refused.
func TestRegistryMode(t *testing.T) {
	stack := throttletest.Start(t, throttletest.Options{}) // only the registry restarts
	args := []string{"-mode", "registry", "-registry-port", "0", "-kafka", stack.Brokers()[0]}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	first, stop := startStoppable(t, args, registryLine)
	base := registryURL(first[1])
	var subjects []string
	if err := getJSON(base+"/subjects", &subjects); err != nil {
		t.Fatal(err)
	}
	subject := (throttle.DefaultTopic + "-value")
	if len(subjects) != 1 || subjects[0] != subject {
		t.Errorf("subjects: got %v, want [%s]: the throttle schema is registered first thing", subjects, subject)
	}
	if first[2] != "1" {
		t.Errorf("schema id: got %s, want 1", first[2])
	}
	cl, err := sr.NewClient(sr.URLs(base))
	if err != nil {
		t.Fatal(err)
	}
	v1 := throttleSchema(t)
	i := strings.LastIndexByte(v1, ']')
	v2 := v1[:i] + `,{"name":"region","type":["null","string"],"default":null}` + v1[i:]
	bad := v1[:i] + `,{"name":"region","type":"string"}` + v1[i:]
	var re *sr.ResponseError
	if _, err := cl.CreateSchema(ctx, subject, sr.Schema{Schema: bad, Type: sr.TypeAvro}); !errors.As(err, &re) || re.StatusCode != http.StatusConflict {
		t.Errorf("register a new required field without default: got %v, want 409", err)
	}
	want, err := cl.CreateSchema(ctx, subject, sr.Schema{Schema: v2, Type: sr.TypeAvro})
	if err != nil {
		t.Fatalf("register a new optional field: %v", err)
	}
	codec, err := throttle.NewCodec(throttle.RegistryConfig{URL: base, Timeout: time.Second}, throttle.DefaultTopic)
	if err != nil {
		t.Fatal(err)
	}
	r := throttle.Record{ID: "6f1c2a34-0000-4000-8000-000000000002", Customer: "acme", Limit: 20, Window: time.Minute,
		CreatedAt: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC), ExpiresAt: time.Date(2026, 11, 22, 10, 10, 0, 0, time.UTC),
		Reason: throttle.Reason{Kind: throttle.ReasonManual}, SetBy: "test", Mode: throttle.ModeEnforce}
	body, err := codec.Encode(&r)
	if err != nil {
		t.Fatal(err)
	}
	// The same record as v2 writes it: the new field (union branch 1, "eu") last.
	rec := append([]byte{0, 0, 0, 0, 0}, body[5:]...)
	binary.BigEndian.PutUint32(rec[1:], uint32(want.ID))
	rec = append(rec, 2, 4, 'e', 'u')

	stop()
	again := start(t, args, registryLine)
	base = registryURL(again[1])
	if again[2] != first[2] {
		t.Errorf("throttle schema id after restart: got %s, want %s", again[2], first[2])
	}
	if cl, err = sr.NewClient(sr.URLs(base)); err != nil {
		t.Fatal(err)
	}
	got, err := cl.SchemaByVersion(ctx, subject, want.Version)
	if err != nil || got.ID != want.ID {
		t.Fatalf("v2 after restart: got %+v %v, want id %d version %d", got, err, want.ID, want.Version)
	}
	codec, err = throttle.NewCodec(throttle.RegistryConfig{URL: base, Timeout: time.Second}, throttle.DefaultTopic)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := codec.Decode(rec); err != nil || !reflect.DeepEqual(d, r) {
		t.Errorf("v2 record after restart: got %+v %v, want %+v", d, err, r)
	}
}

func registryURL(listen string) string {
	_, port, _ := net.SplitHostPort(listen)
	return "http://127.0.0.1:" + port
}

func getJSON(u string, out any) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(out)
}

func TestBrokerMode(t *testing.T) {
	m := start(t, []string{"-mode", "broker", "-host", "127.0.0.1", "-advertised-host", "localhost",
		"-kafka-port", "0", "-data-dir", t.TempDir()},
		regexp.MustCompile(`^Kafka broker listening on (\S+), advertised as (\S+) `))
	_, port, _ := net.SplitHostPort(m[1])
	if m[2] != "localhost:"+port {
		t.Errorf("advertised: got %s, want localhost:%s", m[2], port)
	}
	// Clients are sent to the advertised address.
	conn, err := kafka.Dial("tcp", m[1])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	brokers, err := conn.Brokers()
	if err != nil {
		t.Fatal(err)
	}
	if len(brokers) != 1 || brokers[0].Host != "localhost" {
		t.Errorf("metadata brokers: got %+v, want one, on host localhost", brokers)
	}
}

// throttleSchema is the schema the throttle codec writes: schemas/throttle.avsc.
func throttleSchema(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../schemas/throttle.avsc")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
