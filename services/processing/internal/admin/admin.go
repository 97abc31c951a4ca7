// Package admin is the processing service's HTTP surface: the operators' throttle API
// (behind a bearer token), health and readiness probes, and the Prometheus metrics.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/services/processing/internal/metrics"
)

// Publisher writes throttles to the throttle topic.
type Publisher interface {
	Set(ctx context.Context, r throttle.Record) error
	Lift(ctx context.Context, customer string) error
}

// Table is the service's copy of the throttle topic. Get and Active say nothing
// useful until Ready.
type Table interface {
	Get(customer string) (throttle.Record, bool)
	Active() []throttle.Record
	Ready() bool
}

// Config is the API's access control.
type Config struct {
	// Token is the bearer token every /v1 request must carry. Empty: reads are open and
	// writes are refused, unless AllowNoToken.
	Token string
	// AllowNoToken opens the whole API when Token is empty: for a laptop, never for a
	// shared cluster.
	AllowNoToken bool
}

// maxBody bounds a request body; a throttle request is a few hundred bytes.
const maxBody = 16 << 10

// publishTimeout bounds a write to the throttle topic made for a request.
const publishTimeout = 10 * time.Second

// Check is one readiness condition: nil when it holds.
type Check struct {
	Name  string
	Ready func() error
}

// Option tunes an API.
type Option interface{ apply(*API) }

type optionFunc func(*API)

func (f optionFunc) apply(a *API) { f(a) }

// WithClock makes the API read the time from now.
func WithClock(now func() time.Time) Option { return optionFunc(func(a *API) { a.now = now }) }

// WithIDs makes the API take record ids from newID (default: random UUIDs).
func WithIDs(newID func() string) Option { return optionFunc(func(a *API) { a.newID = newID }) }

// WithMetrics counts the throttles operators set and lift on m.
func WithMetrics(m *metrics.Metrics) Option { return optionFunc(func(a *API) { a.metrics = m }) }

// WithMetricsHandler serves h (promhttp) at /metrics.
func WithMetricsHandler(h http.Handler) Option {
	return optionFunc(func(a *API) { a.metricsHandler = h })
}

// WithReadiness adds conditions to /readyz. Whether the table has caught up is always
// one of them.
func WithReadiness(checks ...Check) Option {
	return optionFunc(func(a *API) { a.checks = append(a.checks, checks...) })
}

// WithLogger logs every throttle an operator sets or lifts.
func WithLogger(l *zap.Logger) Option { return optionFunc(func(a *API) { a.log = l }) }

// API serves the admin endpoints.
type API struct {
	pub            Publisher
	table          Table
	tokenHash      [sha256.Size]byte
	cfg            Config
	now            func() time.Time
	newID          func() string
	metrics        *metrics.Metrics
	metricsHandler http.Handler
	checks         []Check
	log            *zap.Logger
	idem           idemCache
}

// errTableNotReady is /readyz's reason while the table has not caught up with the topic.
var errTableNotReady = errors.New("throttle: table not caught up")

// New returns the API over pub and table.
func New(pub Publisher, table Table, cfg Config, opts ...Option) *API {
	a := &API{pub: pub, table: table, cfg: cfg, now: time.Now, newID: uuid.NewString}
	// The token is compared as a hash so the comparison takes the same time whatever
	// the length of the token sent.
	a.tokenHash = sha256.Sum256([]byte(cfg.Token))
	a.checks = []Check{{Name: "throttle table", Ready: func() error {
		if !table.Ready() {
			return errTableNotReady
		}
		return nil
	}}}
	for _, o := range opts {
		o.apply(a)
	}
	if a.metrics == nil {
		a.metrics = metrics.Discard()
	}
	if a.log == nil {
		a.log = zap.NewNop()
	}
	return a
}

// WritesEnabled reports whether the API accepts writes (a token is set, or running
// without one is allowed), for the start-up log line.
func (a *API) WritesEnabled() bool { return a.cfg.Token != "" || a.cfg.AllowNoToken }

// Handler routes the endpoints.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.HandleFunc("GET /readyz", a.readyz)
	if a.metricsHandler != nil {
		mux.Handle("GET /metrics", a.metricsHandler)
	}
	mux.HandleFunc("POST /v1/throttles", a.authorize(true, a.setThrottle))
	mux.HandleFunc("GET /v1/throttles", a.authorize(false, a.listThrottles))
	mux.HandleFunc("GET /v1/throttles/{customer}", a.authorize(false, a.getThrottle))
	mux.HandleFunc("DELETE /v1/throttles/{customer}", a.authorize(true, a.liftThrottle))
	return mux
}

// authorize checks the bearer token: 401 without one, 403 with a wrong one. Without a
// configured token, writes get 403 unless AllowNoToken.
func (a *API) authorize(write bool, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.cfg.Token == "" {
			if write && !a.cfg.AllowNoToken {
				writeError(w, http.StatusForbidden, "admin writes are disabled: ADMIN_TOKEN is not set", "")
				return
			}
			next(w, r)
			return
		}
		scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sluice-admin"`)
			writeError(w, http.StatusUnauthorized, "missing bearer token", "")
			return
		}
		got := sha256.Sum256([]byte(token))
		if subtle.ConstantTimeCompare(got[:], a.tokenHash[:]) != 1 {
			writeError(w, http.StatusForbidden, "wrong bearer token", "")
			return
		}
		next(w, r)
	}
}

func (a *API) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *API) readyz(w http.ResponseWriter, _ *http.Request) {
	var failing []string
	for _, c := range a.checks {
		if err := c.Ready(); err != nil {
			failing = append(failing, c.Name+": "+err.Error())
		}
	}
	if len(failing) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "failing": failing})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// errorBody is every error answer: what went wrong and, for a bad request, which field.
type errorBody struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

func writeError(w http.ResponseWriter, status int, msg, field string) {
	writeJSON(w, status, errorBody{Error: msg, Field: field})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client went away: nothing to do
}
