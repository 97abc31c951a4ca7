package admin_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/throttlejson"
	"github.com/sluice-dev/sluice/services/processing/internal/admin"
	"github.com/sluice-dev/sluice/services/processing/internal/clocktest"
	"github.com/sluice-dev/sluice/services/processing/internal/metrics"
	"github.com/sluice-dev/sluice/services/processing/internal/throttlefake"
)

const token = "s3cret-token"

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type server struct {
	url   string
	store *throttlefake.Topic
	clk   *clocktest.Clock
	m     *metrics.Metrics
}

func newServer(t *testing.T, cfg admin.Config, opts ...admin.Option) *server {
	t.Helper()
	clk := clocktest.New(now)
	store := throttlefake.New(clk.Now)
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	opts = append([]admin.Option{
		admin.WithClock(clk.Now), admin.WithIDs(func() string { return "id-1" }), admin.WithMetrics(m),
		admin.WithMetricsHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})),
	}, opts...)
	srv := httptest.NewServer(admin.New(store, store, cfg, opts...).Handler())
	t.Cleanup(srv.Close)
	return &server{url: srv.URL, store: store, clk: clk, m: m}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (s *server) do(t *testing.T, method, path, auth, body string) response {
	t.Helper()
	return s.doWith(t, method, path, auth, body, nil)
}

// doWith is do with more request headers.
func (s *server) doWith(t *testing.T, method, path, auth, body string, header map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, s.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

type errorBody struct {
	Error string `json:"error"`
	Field string `json:"field"`
}

func decodeError(t *testing.T, r response) errorBody {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("content type: got %q, want application/json", ct)
	}
	var e errorBody
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error == "" {
		t.Fatalf("error body: got %q (%v), want {\"error\": ...}", r.body, err)
	}
	return e
}

const validBody = `{"customer":"acme","limit":20,"window":"1m","duration":"10m","reason":"flooding since 9am","mode":"enforce"}`

func TestAuthorization(t *testing.T) {
	bearer := "Bearer " + token
	tests := []struct {
		name   string
		cfg    admin.Config
		method string
		path   string
		auth   string
		want   int
	}{
		{"set without a token", admin.Config{Token: token}, "POST", "/v1/throttles", "", http.StatusUnauthorized},
		{"set with another scheme", admin.Config{Token: token}, "POST", "/v1/throttles", "Basic " + token, http.StatusUnauthorized},
		{"set with an empty bearer", admin.Config{Token: token}, "POST", "/v1/throttles", "Bearer ", http.StatusUnauthorized},
		{"set with a wrong token", admin.Config{Token: token}, "POST", "/v1/throttles", "Bearer nope", http.StatusForbidden},
		{"set with a token prefix", admin.Config{Token: token}, "POST", "/v1/throttles", "Bearer s3cret", http.StatusForbidden},
		{"set with the right token", admin.Config{Token: token}, "POST", "/v1/throttles", bearer, http.StatusCreated},
		{"set with a lower-case scheme", admin.Config{Token: token}, "POST", "/v1/throttles", "bearer " + token, http.StatusCreated},
		{"lift without a token", admin.Config{Token: token}, "DELETE", "/v1/throttles/acme", "", http.StatusUnauthorized},
		{"lift with a wrong token", admin.Config{Token: token}, "DELETE", "/v1/throttles/acme", "Bearer nope", http.StatusForbidden},
		{"lift with the right token", admin.Config{Token: token}, "DELETE", "/v1/throttles/acme", bearer, http.StatusNoContent},
		{"list without a token", admin.Config{Token: token}, "GET", "/v1/throttles", "", http.StatusUnauthorized},
		{"list with a wrong token", admin.Config{Token: token}, "GET", "/v1/throttles", "Bearer nope", http.StatusForbidden},
		{"list with the right token", admin.Config{Token: token}, "GET", "/v1/throttles", bearer, http.StatusOK},
		{"get without a token", admin.Config{Token: token}, "GET", "/v1/throttles/acme", "", http.StatusUnauthorized},
		{"no token configured: set refused", admin.Config{}, "POST", "/v1/throttles", "", http.StatusForbidden},
		{"no token configured: set refused whatever is sent", admin.Config{}, "POST", "/v1/throttles", bearer, http.StatusForbidden},
		{"no token configured: lift refused", admin.Config{}, "DELETE", "/v1/throttles/acme", "", http.StatusForbidden},
		{"no token configured: list allowed", admin.Config{}, "GET", "/v1/throttles", "", http.StatusOK},
		{"no token, explicitly allowed: set", admin.Config{AllowNoToken: true}, "POST", "/v1/throttles", "", http.StatusCreated},
		{"no token, explicitly allowed: lift", admin.Config{AllowNoToken: true}, "DELETE", "/v1/throttles/acme", "", http.StatusNoContent},
		{"probes need no token", admin.Config{Token: token}, "GET", "/healthz", "", http.StatusOK},
		{"metrics need no token", admin.Config{Token: token}, "GET", "/metrics", "", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, tt.cfg)
			body := ""
			if tt.method == "POST" {
				body = validBody
			}
			r := s.do(t, tt.method, tt.path, tt.auth, body)
			if r.status != tt.want {
				t.Fatalf("got status %d (%s), want %d", r.status, r.body, tt.want)
			}
			switch r.status {
			case http.StatusUnauthorized:
				decodeError(t, r)
				if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
					t.Errorf("WWW-Authenticate: got %q, want a Bearer challenge", got)
				}
			case http.StatusForbidden:
				e := decodeError(t, r)
				if tt.cfg.Token == "" && !strings.Contains(e.Error, "ADMIN_TOKEN") {
					t.Errorf("error: got %q, want it to name ADMIN_TOKEN", e.Error)
				}
			}
			// Nothing reaches the topic unless authorised.
			if r.status >= 400 && len(s.store.Sets())+len(s.store.Lifts()) != 0 {
				t.Errorf("got writes %v %v after a refusal, want none", s.store.Sets(), s.store.Lifts())
			}
		})
	}
}

func TestSetThrottleValidation(t *testing.T) {
	long := strings.Repeat("x", throttle.MaxCustomerBytes+1)
	tests := []struct {
		name      string
		body      string
		wantCode  int
		wantField string
	}{
		{"empty body", ``, 400, ""},
		{"malformed JSON", `{"customer":`, 400, ""},
		{"not an object", `[1,2]`, 400, ""},
		{"data after the object", validBody + ` {}`, 400, ""},
		{"unknown field", `{"customer":"acme","limit":1,"window":"1m","duration":"1m","colour":"red"}`, 400, "colour"},
		{"customer missing", `{"limit":1,"window":"1m","duration":"1m"}`, 400, "customer"},
		{"customer empty", `{"customer":"","limit":1,"window":"1m","duration":"1m"}`, 400, "customer"},
		{"customer with a control character", `{"customer":"ac\u0007me","limit":1,"window":"1m","duration":"1m"}`, 400, "customer"},
		{"customer too long", `{"customer":"` + long + `","limit":1,"window":"1m","duration":"1m"}`, 400, "customer"},
		{"customer not a string", `{"customer":42,"limit":1,"window":"1m","duration":"1m"}`, 400, "customer"},
		{"limit missing", `{"customer":"acme","window":"1m","duration":"1m"}`, 400, "limit"},
		{"limit negative", `{"customer":"acme","limit":-1,"window":"1m","duration":"1m"}`, 400, "limit"},
		{"limit a string", `{"customer":"acme","limit":"20","window":"1m","duration":"1m"}`, 400, "limit"},
		{"limit a fraction", `{"customer":"acme","limit":2.5,"window":"1m","duration":"1m"}`, 400, "limit"},
		{"window missing", `{"customer":"acme","limit":1,"duration":"1m"}`, 400, "window"},
		{"window not a duration", `{"customer":"acme","limit":1,"window":"a minute","duration":"1m"}`, 400, "window"},
		{"window zero", `{"customer":"acme","limit":1,"window":"0s","duration":"1m"}`, 400, "window"},
		{"window negative", `{"customer":"acme","limit":1,"window":"-1m","duration":"1m"}`, 400, "window"},
		{"window not whole milliseconds", `{"customer":"acme","limit":1,"window":"1500us","duration":"1m"}`, 400, "window"},
		{"window a number", `{"customer":"acme","limit":1,"window":60000,"duration":"1m"}`, 400, "window"},
		{"neither duration nor expires_at", `{"customer":"acme","limit":1,"window":"1m"}`, 400, "duration"},
		{"both duration and expires_at", `{"customer":"acme","limit":1,"window":"1m","duration":"1m","expires_at":"2030-01-01T00:00:00Z"}`, 400, "expires_at"},
		{"duration zero", `{"customer":"acme","limit":1,"window":"1m","duration":"0s"}`, 400, "duration"},
		{"duration negative", `{"customer":"acme","limit":1,"window":"1m","duration":"-10m"}`, 400, "duration"},
		{"duration not a duration", `{"customer":"acme","limit":1,"window":"1m","duration":"soon"}`, 400, "duration"},
		{"expires_at in the past", `{"customer":"acme","limit":1,"window":"1m","expires_at":"2020-01-01T00:00:00Z"}`, 400, "expires_at"},
		{"expires_at now", `{"customer":"acme","limit":1,"window":"1m","expires_at":"2026-03-01T12:00:00Z"}`, 400, "expires_at"},
		{"expires_at not RFC 3339", `{"customer":"acme","limit":1,"window":"1m","expires_at":"tomorrow"}`, 400, "expires_at"},
		{"mode unknown", `{"customer":"acme","limit":1,"window":"1m","duration":"1m","mode":"loud"}`, 400, "mode"},
		{"reason too long", `{"customer":"acme","limit":1,"window":"1m","duration":"1m","reason":"` + strings.Repeat("r", 1025) + `"}`, 400, "reason"},
		{"set_by with a control character", `{"customer":"acme","limit":1,"window":"1m","duration":"1m","set_by":"a\nb"}`, 400, "set_by"},
		{"body too large", `{"customer":"acme","limit":1,"window":"1m","duration":"1m","reason":"` + strings.Repeat("r", 20<<10) + `"}`, 413, ""},
		// As strict as ingestion: which customer would a name given twice throttle?
		{"customer given twice", `{"customer":"acme","customer":"globex","limit":1,"window":"1m","duration":"1m"}`, 400, "customer"},
		{"limit given twice", `{"customer":"acme","limit":1,"limit":1000000,"window":"1m","duration":"1m"}`, 400, "limit"},
		{"a name differing only in case", `{"customer":"acme","Customer":"globex","limit":1,"window":"1m","duration":"1m"}`, 400, "Customer"},
		{"a name in upper case", `{"CUSTOMER":"acme","limit":1,"window":"1m","duration":"1m"}`, 400, "CUSTOMER"},
		{"customer not UTF-8", "{\"customer\":\"ac\xffme\",\"limit\":1,\"window\":\"1m\",\"duration\":\"1m\"}", 400, "customer"},
		{"reason not UTF-8", "{\"customer\":\"acme\",\"limit\":1,\"window\":\"1m\",\"duration\":\"1m\",\"reason\":\"\xc3\"}", 400, "reason"},
		{"limit out of range", `{"customer":"acme","limit":9223372036854775808,"window":"1m","duration":"1m"}`, 400, "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, admin.Config{Token: token})
			r := s.do(t, "POST", "/v1/throttles", "Bearer "+token, tt.body)
			if r.status != tt.wantCode {
				t.Fatalf("got status %d (%s), want %d", r.status, r.body, tt.wantCode)
			}
			if e := decodeError(t, r); e.Field != tt.wantField {
				t.Errorf("field: got %q (%s), want %q", e.Field, e.Error, tt.wantField)
			}
			if got := s.store.Sets(); len(got) != 0 {
				t.Errorf("got %d records published, want none", len(got))
			}
		})
	}
}

func TestSetThrottle(t *testing.T) {
	tests := []struct {
		name string
		body string
		want admin.Throttle
	}{
		{
			name: "with a duration",
			body: validBody,
			want: admin.Throttle{
				ID: "id-1", Customer: "acme", Limit: 20, Window: "1m0s", WindowMS: 60000,
				CreatedAt: now, ExpiresAt: now.Add(10 * time.Minute),
				Reason: admin.Reason{Kind: "manual", Note: "flooding since 9am"}, SetBy: "operator", Mode: "enforce",
			},
		},
		{
			name: "with an expiry, in shadow mode, by a named operator",
			body: `{"customer":"Café Ünïcode","limit":0,"window":"250ms","expires_at":"2026-03-01T15:00:00+02:00","mode":"shadow","set_by":"alice"}`,
			want: admin.Throttle{
				ID: "id-1", Customer: "Café Ünïcode", Limit: 0, Window: "250ms", WindowMS: 250,
				CreatedAt: now, ExpiresAt: now.Add(time.Hour),
				Reason: admin.Reason{Kind: "manual"}, SetBy: "alice", Mode: "shadow",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, admin.Config{Token: token})
			r := s.do(t, "POST", "/v1/throttles", "Bearer "+token, tt.body)
			if r.status != http.StatusCreated {
				t.Fatalf("got status %d (%s), want 201", r.status, r.body)
			}
			var got admin.Throttle
			if err := json.Unmarshal(r.body, &got); err != nil {
				t.Fatalf("decode %s: %v", r.body, err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if loc := r.header.Get("Location"); !strings.HasPrefix(loc, "/v1/throttles/") {
				t.Errorf("Location: got %q, want /v1/throttles/{customer}", loc)
			}
			sets := s.store.Sets()
			if len(sets) != 1 || throttlejson.From(sets[0]) != tt.want {
				t.Errorf("published: got %+v, want one record matching the answer", sets)
			}
			if got := testutil.ToFloat64(s.m.Throttles.WithLabelValues(metrics.ActionSet, metrics.ReasonManual)); got != 1 {
				t.Errorf("set counter: got %g, want 1", got)
			}
		})
	}
}

// The JSON shape carries every field of a throttle, automatic ones' measurement too.
func TestThrottleJSONShape(t *testing.T) {
	rec := throttle.Record{
		ID: "id-9", Customer: "acme", Limit: 20, Window: time.Minute, CreatedAt: now, ExpiresAt: now.Add(10 * time.Minute),
		Reason: throttle.Reason{Kind: throttle.ReasonAutomatic, Note: "sent 75%", Metric: "traffic_share", Value: 0.75},
		SetBy:  "processing-1", Mode: throttle.ModeEnforce,
	}
	b, err := json.Marshal(throttlejson.From(rec))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"id-9","customer":"acme","limit":20,"window":"1m0s","window_ms":60000,` +
		`"created_at":"2026-03-01T12:00:00Z","expires_at":"2026-03-01T12:10:00Z",` +
		`"reason":{"kind":"automatic","note":"sent 75%","metric":"traffic_share","value":0.75},` +
		`"set_by":"processing-1","mode":"enforce"}`
	if string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
}

func TestSetThrottleWhenThePublisherFails(t *testing.T) {
	s := newServer(t, admin.Config{Token: token})
	s.store.FailNext(1)
	r := s.do(t, "POST", "/v1/throttles", "Bearer "+token, validBody)
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("got status %d (%s), want 503", r.status, r.body)
	}
	decodeError(t, r)
}

func TestLiftThrottle(t *testing.T) {
	tests := []struct {
		name      string
		path      string
		fail      bool
		want      int
		wantLifts []string
	}{
		{"lift", "/v1/throttles/acme", false, http.StatusNoContent, []string{"acme"}},
		{"lift an escaped id", "/v1/throttles/a%2Fb%20c", false, http.StatusNoContent, []string{"a/b c"}},
		{"lift is idempotent", "/v1/throttles/nobody", false, http.StatusNoContent, []string{"nobody"}},
		{"invalid customer", "/v1/throttles/ac%01me", false, http.StatusBadRequest, nil},
		{"publisher down", "/v1/throttles/acme", true, http.StatusServiceUnavailable, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, admin.Config{Token: token})
			if tt.fail {
				s.store.FailNext(1)
			}
			r := s.do(t, "DELETE", tt.path, "Bearer "+token, "")
			if r.status != tt.want {
				t.Fatalf("got status %d (%s), want %d", r.status, r.body, tt.want)
			}
			if r.status == http.StatusBadRequest {
				if e := decodeError(t, r); e.Field != "customer" {
					t.Errorf("field: got %q, want customer", e.Field)
				}
			}
			if got := s.store.Lifts(); strings.Join(got, ",") != strings.Join(tt.wantLifts, ",") {
				t.Errorf("lifts: got %q, want %q", got, tt.wantLifts)
			}
		})
	}
}

func TestGetThrottles(t *testing.T) {
	s := newServer(t, admin.Config{Token: token})
	for _, r := range []throttle.Record{
		{ID: "1", Customer: "zeta", Limit: 5, Window: time.Minute, CreatedAt: now.Add(-time.Minute), ExpiresAt: now.Add(time.Hour)},
		{ID: "2", Customer: "acme", Limit: 20, Window: time.Minute, CreatedAt: now.Add(-time.Minute), ExpiresAt: now.Add(time.Hour),
			Reason: throttle.Reason{Kind: throttle.ReasonAutomatic, Metric: "event_age_seconds", Value: 95}},
		{ID: "3", Customer: "gone", Limit: 1, Window: time.Minute, CreatedAt: now.Add(-time.Hour), ExpiresAt: now.Add(-time.Minute)},
	} {
		s.store.Put(r)
	}
	auth := "Bearer " + token

	r := s.do(t, "GET", "/v1/throttles", auth, "")
	var list struct{ Throttles []admin.Throttle }
	if err := json.Unmarshal(r.body, &list); r.status != http.StatusOK || err != nil {
		t.Fatalf("list: got %d %s (%v), want 200 with throttles", r.status, r.body, err)
	}
	var names []string
	for _, th := range list.Throttles {
		names = append(names, th.Customer)
	}
	if got := strings.Join(names, ","); got != "acme,zeta" {
		t.Errorf("list: got %s, want acme,zeta (sorted, expired left out)", got)
	}

	tests := []struct {
		path   string
		want   int
		wantID string
	}{
		{"/v1/throttles/acme", http.StatusOK, "2"},
		{"/v1/throttles/zeta", http.StatusOK, "1"},
		{"/v1/throttles/gone", http.StatusNotFound, ""},
		{"/v1/throttles/nobody", http.StatusNotFound, ""},
		{"/v1/throttles/ACME", http.StatusNotFound, ""}, // ids are bytes: no case folding
		{"/v1/throttles/ac%7Fme", http.StatusBadRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			r := s.do(t, "GET", tt.path, auth, "")
			if r.status != tt.want {
				t.Fatalf("got status %d (%s), want %d", r.status, r.body, tt.want)
			}
			if tt.want != http.StatusOK {
				decodeError(t, r)
				return
			}
			var th admin.Throttle
			if err := json.Unmarshal(r.body, &th); err != nil || th.ID != tt.wantID {
				t.Errorf("got %s (%v), want the throttle with id %s", r.body, err, tt.wantID)
			}
		})
	}

	s.store.SetReady(false)
	for _, path := range []string{"/v1/throttles", "/v1/throttles/acme"} {
		if r := s.do(t, "GET", path, auth, ""); r.status != http.StatusServiceUnavailable {
			t.Errorf("GET %s before the table caught up: got %d, want 503", path, r.status)
		}
	}
}

func TestProbes(t *testing.T) {
	consumerErr := errors.New("not consuming")
	tests := []struct {
		name       string
		tableReady bool
		consumer   error
		want       int
	}{
		{"all ready", true, nil, http.StatusOK},
		{"table catching up", false, nil, http.StatusServiceUnavailable},
		{"consumer not running", true, consumerErr, http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, admin.Config{Token: token}, admin.WithReadiness(admin.Check{
				Name: "consumer", Ready: func() error { return tt.consumer },
			}))
			s.store.SetReady(tt.tableReady)
			if r := s.do(t, "GET", "/healthz", "", ""); r.status != http.StatusOK {
				t.Errorf("healthz: got %d, want 200", r.status)
			}
			r := s.do(t, "GET", "/readyz", "", "")
			if r.status != tt.want {
				t.Errorf("readyz: got %d (%s), want %d", r.status, r.body, tt.want)
			}
		})
	}
}

func TestMetricsEndpoint(t *testing.T) {
	s := newServer(t, admin.Config{Token: token})
	s.do(t, "POST", "/v1/throttles", "Bearer "+token, validBody)
	r := s.do(t, "GET", "/metrics", "", "")
	want := `sluice_processing_throttles_total{action="set",reason="manual"} 1`
	if r.status != http.StatusOK || !strings.Contains(string(r.body), want) {
		t.Errorf("metrics: got %d, want 200 with %s in\n%s", r.status, want, r.body)
	}
}
