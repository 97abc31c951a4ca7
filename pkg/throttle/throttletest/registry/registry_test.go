package registry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sluice-dev/sluice/pkg/throttle/throttletest/registry"
)

// broker is a kfake cluster whose log lives in dir, so a new one on the same dir
// restarts it.
func broker(t *testing.T, dir string) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DataDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// serve starts a registry with opts and returns its URL; stop closes it.
func serve(t *testing.T, opts ...registry.Option) (base string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := registry.New(ctx, opts...)
	if err != nil {
		t.Fatalf("start registry: %v", err)
	}
	srv := httptest.NewServer(s.Handler())
	var stopped bool
	stop = func() {
		if !stopped {
			stopped = true
			srv.Close()
			s.Close()
		}
	}
	t.Cleanup(stop)
	return srv.URL, stop
}

// do sends body (JSON-encoded unless nil) and decodes the answer into out.
func do(t *testing.T, method, u string, body, out any) int {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, u, b, err)
		}
	}
	return resp.StatusCode
}

// record is an Avro record schema named T with the given fields (JSON objects).
func record(fields ...string) string {
	return `{"type":"record","name":"T","namespace":"test","fields":[` + strings.Join(fields, ",") + `]}`
}

const (
	fieldA        = `{"name":"a","type":"string"}`
	fieldRequired = `{"name":"b","type":"long"}`
	fieldOptional = `{"name":"b","type":["null","string"],"default":null}`
	fieldXString  = `{"name":"x","type":"string","default":""}`
	fieldXInt     = `{"name":"x","type":"int","default":0}`
)

type schemaReq struct {
	Schema string `json:"schema"`
}

type apiError struct {
	Code    int    `json:"error_code"`
	Message string `json:"message"`
}

func register(t *testing.T, base, subject, schema string) (int, int, apiError) {
	t.Helper()
	var got struct {
		ID int `json:"id"`
		apiError
	}
	status := do(t, http.MethodPost, base+"/subjects/"+url.PathEscape(subject)+"/versions", schemaReq{schema}, &got)
	return status, got.ID, got.apiError
}

func setLevel(t *testing.T, base, subject, level string) {
	t.Helper()
	u := base + "/config"
	if subject != "" {
		u += "/" + url.PathEscape(subject)
	}
	if status := do(t, http.MethodPut, u, map[string]string{"compatibility": level}, nil); status != http.StatusOK {
		t.Fatalf("PUT %s %s: got %d, want 200", u, level, status)
	}
}

func level(t *testing.T, base, subject string) string {
	t.Helper()
	u := base + "/config"
	if subject != "" {
		u += "/" + url.PathEscape(subject)
	}
	var got struct {
		CompatibilityLevel string `json:"compatibilityLevel"`
	}
	if status := do(t, http.MethodGet, u, nil, &got); status != http.StatusOK {
		t.Fatalf("GET %s: got %d, want 200", u, status)
	}
	return got.CompatibilityLevel
}

// TestRefusesIncompatibleSchemas registers a first schema, then a second under each
// level: an incompatible one gets 409 in Confluent's error shape, a compatible one its
// id. The compatibility endpoint gives the same answer before the registration.
func TestRefusesIncompatibleSchemas(t *testing.T) {
	for _, tc := range []struct {
		name    string
		level   string // "" leaves the default (BACKWARD)
		history []string
		next    string
		want    bool // accepted
	}{
		{"default level, new required field", "", []string{record(fieldA)}, record(fieldA, fieldRequired), false},
		{"default level, new optional field with default", "", []string{record(fieldA)}, record(fieldA, fieldOptional), true},
		{"BACKWARD, removed field", "BACKWARD", []string{record(fieldA, fieldRequired)}, record(fieldA), true},
		{"BACKWARD, changed type", "BACKWARD", []string{record(fieldA)}, record(`{"name":"a","type":"long"}`), false},
		{"BACKWARD, promoted type", "BACKWARD", []string{record(`{"name":"a","type":"int"}`)}, record(`{"name":"a","type":"long"}`), true},
		{"BACKWARD, new enum symbol", "BACKWARD",
			[]string{record(`{"name":"e","type":{"type":"enum","name":"E","symbols":["X"],"default":"X"}}`)},
			record(`{"name":"e","type":{"type":"enum","name":"E","symbols":["X","Y"],"default":"X"}}`), true},
		{"FORWARD, new required field", "FORWARD", []string{record(fieldA)}, record(fieldA, fieldRequired), true},
		{"FORWARD, removed required field", "FORWARD", []string{record(fieldA, fieldRequired)}, record(fieldA), false},
		{"FULL, new required field", "FULL", []string{record(fieldA)}, record(fieldA, fieldRequired), false},
		{"FULL, new optional field with default", "FULL", []string{record(fieldA)}, record(fieldA, fieldOptional), true},
		{"NONE, new required field", "NONE", []string{record(fieldA)}, record(fieldA, fieldRequired), true},
		// x is dropped, then comes back as another type: compatible with the latest
		// version, not with the first.
		{"BACKWARD, only the latest counts", "BACKWARD", []string{record(fieldA, fieldXString), record(fieldA)}, record(fieldA, fieldXInt), true},
		{"BACKWARD_TRANSITIVE, every version counts", "BACKWARD_TRANSITIVE", []string{record(fieldA, fieldXString), record(fieldA)}, record(fieldA, fieldXInt), false},
		{"FORWARD, only the latest counts", "FORWARD", []string{record(fieldA, fieldXString), record(fieldA)}, record(fieldA, fieldXInt), true},
		{"FORWARD_TRANSITIVE, every version counts", "FORWARD_TRANSITIVE", []string{record(fieldA, fieldXString), record(fieldA)}, record(fieldA, fieldXInt), false},
		{"FULL, only the latest counts", "FULL", []string{record(fieldA, fieldXString), record(fieldA)}, record(fieldA, fieldXInt), true},
		{"FULL_TRANSITIVE, every version counts", "FULL_TRANSITIVE", []string{record(fieldA, fieldXString), record(fieldA)}, record(fieldA, fieldXInt), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, _ := serve(t)
			const subject = "s-value"
			if tc.level != "" {
				setLevel(t, base, subject, tc.level)
			}
			for i, h := range tc.history {
				if status, _, e := register(t, base, subject, h); status != http.StatusOK {
					t.Fatalf("register version %d: got %d %+v, want 200", i+1, status, e)
				}
			}
			var compat struct {
				IsCompatible bool `json:"is_compatible"`
			}
			if status := do(t, http.MethodPost, base+"/compatibility/subjects/"+subject+"/versions", schemaReq{tc.next}, &compat); status != http.StatusOK {
				t.Fatalf("POST compatibility: got %d, want 200", status)
			}
			if compat.IsCompatible != tc.want {
				t.Errorf("compatibility check: got is_compatible %v, want %v", compat.IsCompatible, tc.want)
			}
			status, id, e := register(t, base, subject, tc.next)
			switch {
			case tc.want && (status != http.StatusOK || id == 0):
				t.Errorf("register: got %d %+v, want 200 and an id", status, e)
			case !tc.want && (status != http.StatusConflict || e.Code != 409 || e.Message == ""):
				t.Errorf("register: got %d %+v, want 409 with error_code 409 and a message", status, e)
			}
		})
	}
}

// TestCompatibilityAgainstOneVersion: /compatibility/.../versions/{v} checks against v
// alone, and answers 404 for a version or subject that does not exist.
func TestCompatibilityAgainstOneVersion(t *testing.T) {
	base, _ := serve(t)
	setLevel(t, base, "s", "BACKWARD")
	for _, sch := range []string{record(fieldA, fieldXString), record(fieldA)} {
		if status, _, e := register(t, base, "s", sch); status != http.StatusOK {
			t.Fatalf("register: got %d %+v", status, e)
		}
	}
	for _, tc := range []struct {
		path   string
		status int
		want   bool
	}{
		{"/compatibility/subjects/s/versions/1", http.StatusOK, false},
		{"/compatibility/subjects/s/versions/2", http.StatusOK, true},
		{"/compatibility/subjects/s/versions/latest", http.StatusOK, true},
		{"/compatibility/subjects/s/versions/3", http.StatusNotFound, false},
		{"/compatibility/subjects/nope/versions/1", http.StatusNotFound, false},
	} {
		var got struct {
			IsCompatible bool `json:"is_compatible"`
		}
		status := do(t, http.MethodPost, base+tc.path, schemaReq{record(fieldA, fieldXInt)}, &got)
		if status != tc.status || got.IsCompatible != tc.want {
			t.Errorf("POST %s: got %d is_compatible %v, want %d %v", tc.path, status, got.IsCompatible, tc.status, tc.want)
		}
	}
}

// TestRefusesWhatItCannotKeep: invalid Avro, other schema types, deletes and modes are
// refused, not accepted and then lost.
func TestRefusesWhatItCannotKeep(t *testing.T) {
	base, _ := serve(t)
	if status, _, _ := register(t, base, "s", record(fieldA)); status != http.StatusOK {
		t.Fatalf("register: got %d", status)
	}
	for _, tc := range []struct {
		method, path string
		body         any
		status       int
	}{
		{http.MethodPost, "/subjects/s/versions", schemaReq{`{"type":"record","name":"T","fields":[{"name":"a","type":"nosuchtype"}]}`}, http.StatusUnprocessableEntity},
		{http.MethodPost, "/subjects/s/versions", map[string]string{"schema": `{"type":"object"}`, "schemaType": "JSON"}, http.StatusUnprocessableEntity},
		{http.MethodDelete, "/subjects/s/versions/1", nil, http.StatusUnprocessableEntity},
		{http.MethodDelete, "/subjects/s", nil, http.StatusUnprocessableEntity},
		{http.MethodPut, "/mode", map[string]string{"mode": "READONLY"}, http.StatusUnprocessableEntity},
		{http.MethodPut, "/config/s", map[string]string{"compatibility": "SIDEWAYS"}, http.StatusUnprocessableEntity},
	} {
		var e apiError
		if status := do(t, tc.method, base+tc.path, tc.body, &e); status != tc.status || e.Code == 0 {
			t.Errorf("%s %s: got %d %+v, want %d with an error_code", tc.method, tc.path, status, e, tc.status)
		}
	}
	var versions []int
	if status := do(t, http.MethodGet, base+"/subjects/s/versions", nil, &versions); status != http.StatusOK || len(versions) != 1 {
		t.Errorf("versions after refused writes: got %d %v, want 200 [1]", status, versions)
	}
}

type subjectVersion struct {
	Subject string `json:"subject"`
	Version int    `json:"version"`
	ID      int    `json:"id"`
	Schema  string `json:"schema"`
}

// TestKeepsSchemasAcrossRestart registers schemas under two subjects (one shared, so
// srfake gives it the id it has under the first) and levels, restarts the broker and
// the registry on the same log, and finds every one with its id, version and level.
func TestKeepsSchemasAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	c := broker(t, dir)
	base, stop := serve(t, registry.WithBrokers(c.ListenAddrs()...))

	setLevel(t, base, "", "FULL")
	setLevel(t, base, "a-value", "BACKWARD")
	setLevel(t, base, "b-value", "NONE")
	setLevel(t, base, "gone-value", "FORWARD")
	if status := do(t, http.MethodDelete, base+"/config/gone-value", nil, nil); status != http.StatusOK {
		t.Fatalf("DELETE /config/gone-value: got %d", status)
	}
	steps := []struct{ subject, schema string }{
		{"a-value", record(fieldA)},
		{"a-value", record(fieldA, fieldOptional)},
		{"b-value", record(fieldA)}, // the same schema as a-value's first: its id again
		{"a-value", record(fieldA, fieldOptional, fieldXString)},
		{"b-value", record(fieldRequired)},
	}
	for i, st := range steps {
		if status, _, e := register(t, base, st.subject, st.schema); status != http.StatusOK {
			t.Fatalf("step %d: register under %s: got %d %+v", i, st.subject, status, e)
		}
	}
	snapshot := func(base string) map[string][]subjectVersion {
		got := map[string][]subjectVersion{}
		for _, subject := range []string{"a-value", "b-value"} {
			var versions []int
			if status := do(t, http.MethodGet, base+"/subjects/"+subject+"/versions", nil, &versions); status != http.StatusOK {
				t.Fatalf("GET versions of %s: got %d", subject, status)
			}
			for _, v := range versions {
				var sv subjectVersion
				do(t, http.MethodGet, fmt.Sprintf("%s/subjects/%s/versions/%d", base, subject, v), nil, &sv)
				got[subject] = append(got[subject], sv)
			}
		}
		return got
	}
	before := snapshot(base)
	if len(before["a-value"]) != 3 || len(before["b-value"]) != 2 || before["b-value"][0].ID != before["a-value"][0].ID {
		t.Fatalf("before restart: got %+v, want 3 versions of a-value, 2 of b-value, b-value's first with a-value's first id", before)
	}

	stop()
	c.Close()
	c = broker(t, dir)
	defer c.Close()
	base, _ = serve(t, registry.WithBrokers(c.ListenAddrs()...))

	after := snapshot(base)
	for subject, want := range before {
		got := after[subject]
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s after restart: got %+v, want %+v", subject, got, want)
		}
	}
	for subject, want := range map[string]string{"": "FULL", "a-value": "BACKWARD", "b-value": "NONE", "gone-value": "FULL"} {
		if got := level(t, base, subject); got != want {
			t.Errorf("level of %q after restart: got %s, want %s", subject, got, want)
		}
	}
	// The levels are enforced after the restart, and new schemas get new ids.
	if status, _, _ := register(t, base, "a-value", record(fieldA, fieldOptional, fieldXString, `{"name":"c","type":"long"}`)); status != http.StatusConflict {
		t.Errorf("incompatible schema after restart: got %d, want 409", status)
	}
	maxID := 0
	for _, vs := range before {
		for _, v := range vs {
			maxID = max(maxID, v.ID)
		}
	}
	if status, id, e := register(t, base, "c-value", record(fieldXInt)); status != http.StatusOK || id != maxID+1 {
		t.Errorf("new schema after restart: got %d id %d %+v, want 200 id %d", status, id, e, maxID+1)
	}
}

// TestStoreDownRefusesRegistration: a registration the broker cannot keep is refused
// with 500 and not served, so nothing is served that a restart would lose.
func TestStoreDownRefusesRegistration(t *testing.T) {
	c := broker(t, t.TempDir())
	base, _ := serve(t, registry.WithBrokers(c.ListenAddrs()...), registry.WithWriteTimeout(time.Second))
	if status, _, _ := register(t, base, "s", record(fieldA)); status != http.StatusOK {
		t.Fatalf("register with the broker up: got %d", status)
	}
	c.Close()
	status, _, e := register(t, base, "s", record(fieldA, fieldOptional))
	if status != http.StatusInternalServerError || e.Code != 50001 {
		t.Errorf("register with the broker down: got %d %+v, want 500 error_code 50001", status, e)
	}
	var versions []int
	if do(t, http.MethodGet, base+"/subjects/s/versions", nil, &versions); len(versions) != 1 {
		t.Errorf("versions after a refused registration: got %v, want [1]", versions)
	}
}
