// Package server is the ingestion HTTP API: POST /v1/events, the throttle views, and the
// health, readiness and metrics endpoints.
package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/services/ingestion/internal/limit"
	"github.com/sluice-dev/sluice/services/ingestion/internal/metrics"
)

// Table is the throttle table as the server reads it: readiness for every request, and
// the views. The per-request lookup goes through the Enforcer.
type Table interface {
	Ready() bool
	Get(customer string) (throttle.Record, bool)
	Active() []throttle.Record
	Stats() throttle.TableStats
}

// Sink takes accepted events to Kafka (*sink.Sink).
type Sink interface {
	// Write returns once Kafka acknowledged msgs, or with the reason it did not.
	Write(msgs []kafka.Message) error
	// Capacity is the most events one request can have.
	Capacity() int
}

// Config tunes the server.
type Config struct {
	// Replica names this replica in the throttle views.
	Replica string
	// MaxBodyBytes bounds a request body (413 beyond; default 1 MiB).
	MaxBodyBytes int64
	// Keys maps API keys to customers; nil or empty turns keys off.
	Keys map[string]string
	// Clock replaces time.Now, for tests.
	Clock func() time.Time
	// Audit counts the events of every 202, once the sink has written them (nil: no
	// audit).
	Audit Auditor
}

// Auditor counts accepted events by partition and ingestion time (an *audit.Tally).
type Auditor interface {
	// Accepted counts msgs, which the sink wrote: each one's Partition and Time are set.
	Accepted(msgs []kafka.Message)
}

// Server serves the API. Create it with New; Handler returns its routes.
type Server struct {
	cfg      Config
	keys     keyring
	table    Table
	enforcer *limit.Enforcer
	fleet    limit.Fleet
	sink     Sink
	metrics  *metrics.Metrics
	draining atomic.Bool
	scratch  sync.Pool // of *scratch
}

// New returns a server. fleet may be nil (a fleet of one); m may be nil (metrics kept
// but not served elsewhere).
func New(cfg Config, table Table, enforcer *limit.Enforcer, fleet limit.Fleet, out Sink, m *metrics.Metrics) *Server {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if m == nil {
		m = metrics.New()
	}
	return &Server{
		cfg: cfg, keys: newKeyring(cfg.Keys), table: table, enforcer: enforcer, fleet: fleet, sink: out, metrics: m,
		scratch: sync.Pool{New: func() any { return new(scratch) }},
	}
}

// Drain makes /readyz fail and refuses new events with 503, so load balancers move
// traffic away while requests in flight finish.
func (s *Server) Drain() { s.draining.Store(true) }

// Handler returns the routes. Unknown paths get a JSON 404, known paths with another
// method a JSON 405 with Allow.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	route := func(method, path string, h http.HandlerFunc) {
		mux.HandleFunc(method+" "+path, h)
		allow := method
		if method == http.MethodGet {
			allow = "GET, HEAD"
		}
		// The method-less pattern is less specific, so it only catches other methods.
		mux.HandleFunc(path, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Allow", allow)
			writeJSON(w, http.StatusMethodNotAllowed, &apiError{Message: "method not allowed; allowed: " + allow})
		})
	}
	route(http.MethodPost, "/v1/events", s.postEvents)
	route(http.MethodGet, "/v1/throttles", s.listThrottles)
	route(http.MethodGet, "/v1/throttles/{customer...}", s.getThrottle)
	route(http.MethodGet, "/healthz", s.healthz)
	route(http.MethodGet, "/readyz", s.readyz)
	if s.metrics != nil {
		route(http.MethodGet, "/metrics", s.metrics.Handler().ServeHTTP)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, &apiError{Message: "not found"})
	})
	return mux
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	switch {
	case s.draining.Load():
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": "shutting down"})
	case !s.table.Ready():
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": "throttle table not caught up"})
	default:
		writeJSON(w, http.StatusOK, map[string]any{"ready": true})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// jsonContentType is every JSON answer's Content-Type, shared: net/http copies a handler's
// header before writing it and never changes the slices in it, so one slice serves all
// (and saves an allocation on the hot path).
var jsonContentType = []string{"application/json"}

// customerFromPath validates the customer of /v1/throttles/{customer...}.
func customerFromPath(r *http.Request) (string, *apiError) {
	c := r.PathValue("customer")
	if err := throttle.ValidateCustomer(c); err != nil {
		return "", badRequest("customer", "%s", strings.TrimPrefix(err.Error(), throttle.ErrInvalid.Error()+": "))
	}
	return c, nil
}
