// Package registry is the Schema Registry of Sluice's tests and local stack: srfake (an
// in-memory Confluent Schema Registry) behind a handler that adds the two things a real
// registry does and srfake does not. It keeps every registration and compatibility
// level in a compacted topic of a broker (`_schemas`, as Confluent's registry does) and
// replays it at start, so schemas keep their subject, version and id across restarts;
// and it refuses a schema that is incompatible with the subject's earlier ones under
// the subject's (or the global) compatibility level, with hamba/avro's checker.
//
// It is test and development support, not a registry to run in production: one node,
// Avro only, no deletes, no modes, no auth (see the README of the repository).
package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

// ErrReplay is returned by New when the stored schemas cannot be served as they were
// registered (an id or version would change, a record it does not support): retrying
// will not help.
var ErrReplay = errors.New("registry: cannot replay the stored schemas")

// Option configures a Server.
type Option interface{ apply(*config) }

type config struct {
	brokers  []string
	kafka    []kgo.Opt
	topic    string
	timeout  time.Duration
	readOnly bool
}

type optFunc func(*config)

func (f optFunc) apply(c *config) { f(c) }

// WithBrokers keeps the schemas in a topic of these brokers. Without it the registry
// keeps them in memory only, like srfake.
func WithBrokers(brokers ...string) Option {
	return optFunc(func(c *config) { c.brokers = brokers })
}

// WithKafkaOpts adds options to the clients of the brokers of WithBrokers: TLS and SASL
// on a secured cluster, as Confluent's registry takes kafkastore.security.protocol and
// its credentials.
func WithKafkaOpts(opts ...kgo.Opt) Option {
	return optFunc(func(c *config) { c.kafka = append(c.kafka, opts...) })
}

// WithTopic names the topic the schemas are kept in (default DefaultTopic).
func WithTopic(topic string) Option {
	return optFunc(func(c *config) { c.topic = topic })
}

// WithWriteTimeout bounds how long a registration waits for the broker to keep it
// (default 10s); past it the registration is refused with 500.
func WithWriteTimeout(d time.Duration) Option {
	return optFunc(func(c *config) { c.timeout = d })
}

// WithReadOnly makes a follower: it never writes to the topic of WithBrokers (which a
// mirror such as MirrorMaker 2 fills from another region's registry), serves what it
// has read there, keeps reading it, and refuses new registrations and level changes
// (422, 42205, as Confluent's READONLY mode). A schema it already has is answered with
// its id, as a lookup. Failing over: start it again without this option.
func WithReadOnly() Option {
	return optFunc(func(c *config) { c.readOnly = true })
}

// Server is a Schema Registry. Serve its Handler; Close it when done.
type Server struct {
	fake    *srfake.Registry
	inner   http.Handler
	store   *store // nil: in memory
	handler http.Handler
	// readOnly: a follower of its topic (WithReadOnly); stop ends its reading.
	readOnly  bool
	stop      context.CancelFunc
	followed  chan struct{} // closed when the follower's reading has ended
	followErr atomic.Pointer[error]
	compat    *avro.SchemaCompatibility

	// wmu makes each write (check, register, store) one step: two registrations of one
	// subject must not both pass the check against the same latest version.
	wmu sync.Mutex
}

// New starts a registry. With WithBrokers it first replays the topic (creating it if
// need be), so it needs the broker to be up; it fails if a stored schema cannot get
// back its id and version.
func New(ctx context.Context, opts ...Option) (*Server, error) {
	cfg := config{topic: DefaultTopic, timeout: 10 * time.Second}
	for _, o := range opts {
		o.apply(&cfg)
	}
	if cfg.topic == "" {
		return nil, errors.New("registry: empty topic")
	}
	if cfg.timeout <= 0 {
		return nil, fmt.Errorf("registry: write timeout %s: want > 0", cfg.timeout)
	}
	if cfg.readOnly && len(cfg.brokers) == 0 {
		return nil, errors.New("registry: WithReadOnly follows a topic: give WithBrokers too")
	}
	fake := srfake.NewRegistry()
	s := &Server{fake: fake, inner: fake.Handler(), compat: avro.NewSchemaCompatibility(), readOnly: cfg.readOnly}
	if len(cfg.brokers) > 0 {
		st, err := openStore(ctx, cfg.brokers, cfg.kafka, cfg.topic, cfg.timeout, !cfg.readOnly)
		if err != nil {
			return nil, err
		}
		r := replayer{s: s, seen: map[int]string{}}
		if cfg.readOnly {
			err = s.follow(ctx, st, r)
		} else {
			err = st.replay(ctx, r.apply)
		}
		if err != nil {
			st.close()
			return nil, err
		}
		s.store = st
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /subjects/{subject}/versions", s.handleRegister)
	mux.HandleFunc("PUT /config", s.writable(s.handlePutConfig))
	mux.HandleFunc("PUT /config/{subject}", s.writable(s.handlePutConfig))
	mux.HandleFunc("DELETE /config/{subject}", s.writable(s.handleDeleteConfig))
	mux.HandleFunc("POST /compatibility/subjects/{subject}/versions", s.handleCompatibility)
	mux.HandleFunc("POST /compatibility/subjects/{subject}/versions/{version}", s.handleCompatibility)
	// What the store cannot keep is refused rather than forgotten at the next restart.
	mux.HandleFunc("DELETE /subjects/{subject}", s.unsupported("deletes"))
	mux.HandleFunc("DELETE /subjects/{subject}/versions/{version}", s.unsupported("deletes"))
	mux.HandleFunc("PUT /mode", s.unsupported("modes"))
	mux.HandleFunc("PUT /mode/{subject}", s.unsupported("modes"))
	mux.HandleFunc("DELETE /mode", s.unsupported("modes"))
	mux.HandleFunc("DELETE /mode/{subject}", s.unsupported("modes"))
	mux.HandleFunc("/contexts/", s.handleContexts)
	mux.Handle("/", s.inner)
	s.handler = mux
	return s, nil
}

// Handler serves the Confluent Schema Registry REST API.
func (s *Server) Handler() http.Handler { return s.handler }

// Fake returns the in-memory registry behind the server, for tests that seed schemas
// directly: what is written through it is neither checked nor stored.
func (s *Server) Fake() *srfake.Registry { return s.fake }

// Persistent reports whether the registry keeps its schemas in a broker.
func (s *Server) Persistent() bool { return s.store != nil }

// Close releases the connection to the broker.
func (s *Server) Close() {
	if s.stop != nil {
		s.stop()
		<-s.followed
	}
	if s.store != nil {
		s.store.close()
	}
}

// Confluent's error codes for what srfake does not answer itself.
const (
	codeIncompatible    = 409
	codeInvalidSchema   = 42201
	codeInvalidCompat   = 42203
	codeNotPermitted    = 42205
	codeStoreError      = 50001
	codeSubjectNotFound = 40401
	codeVersionNotFound = 40402
	codeInvalidVersion  = 42202
)

func writeError(w http.ResponseWriter, status, code int, format string, args ...any) {
	writeJSON(w, status, map[string]any{"error_code": code, "message": fmt.Sprintf(format, args...)})
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func (s *Server) unsupported(what string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusUnprocessableEntity, codeNotPermitted,
			"the embedded registry does not support %s: it could not keep them across a restart", what)
	}
}

// writable refuses h's writes on a read-only registry.
func (s *Server) writable(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		if s.readOnly {
			s.refuseWrite(w)
			return
		}
		h(w, req)
	}
}

func (s *Server) refuseWrite(w http.ResponseWriter) {
	writeError(w, http.StatusUnprocessableEntity, codeNotPermitted,
		"this registry is read-only: it follows the schemas another registry writes (start it without read-only to fail over)")
}

// handleContexts serves reads under /contexts/ and refuses writes: contexts would
// bypass the check and the store.
func (s *Server) handleContexts(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet {
		s.unsupported("writes in schema contexts")(w, req)
		return
	}
	s.inner.ServeHTTP(w, req)
}

// call sends one request to srfake and returns its status and body.
func (s *Server) call(method, path string, body []byte) (int, []byte) {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	rec := httptest.NewRecorder()
	s.inner.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

func forward(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func subjectPath(subject string) string { return url.PathEscape(subject) }

// readSchema reads a request's schema and parses it as Avro. It answers the request
// itself when it returns false.
func (s *Server) readSchema(w http.ResponseWriter, req *http.Request) ([]byte, sr.Schema, avro.Schema, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, 1<<20))
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, codeInvalidSchema, "read request: %v", err)
		return nil, sr.Schema{}, nil, false
	}
	var in sr.Schema
	if err := json.Unmarshal(body, &in); err != nil {
		writeError(w, http.StatusUnprocessableEntity, codeInvalidSchema, "invalid request: %v", err)
		return nil, sr.Schema{}, nil, false
	}
	if in.Type != sr.TypeAvro {
		writeError(w, http.StatusUnprocessableEntity, codeInvalidSchema,
			"the embedded registry takes AVRO schemas only, not %s", in.Type)
		return nil, sr.Schema{}, nil, false
	}
	if len(in.References) > 0 {
		writeError(w, http.StatusUnprocessableEntity, codeInvalidSchema, "the embedded registry does not support schema references")
		return nil, sr.Schema{}, nil, false
	}
	parsed, err := parseAvro(in.Schema)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, codeInvalidSchema, "Invalid schema: %v", err)
		return nil, sr.Schema{}, nil, false
	}
	return body, in, parsed, true
}

// parseAvro parses with a cache of its own: hamba's default cache is process-wide, and
// two versions of one named record must not see each other's definitions.
func parseAvro(schema string) (avro.Schema, error) {
	return avro.ParseWithCache(schema, "", &avro.SchemaCache{})
}

// lookup returns the id and version under which subject already has schema.
func (s *Server) lookup(subject string, body []byte) (id, version int, ok bool) {
	status, out := s.call(http.MethodPost, "/subjects/"+subjectPath(subject), body)
	if status != http.StatusOK {
		return 0, 0, false
	}
	var got struct{ ID, Version int }
	if json.Unmarshal(out, &got) != nil {
		return 0, 0, false
	}
	return got.ID, got.Version, true
}

func (s *Server) handleRegister(w http.ResponseWriter, req *http.Request) {
	subject := req.PathValue("subject")
	body, in, parsed, ok := s.readSchema(w, req)
	if !ok {
		return
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	// A schema the subject has already is answered with its id, unchecked, as Confluent
	// does: registering is idempotent.
	if id, _, ok := s.lookup(subject, body); ok {
		writeJSON(w, http.StatusOK, map[string]int{"id": id})
		return
	}
	if s.readOnly {
		s.refuseWrite(w)
		return
	}
	level := s.level(subject)
	against, err := s.versions(subject, level.transitive())
	if err != nil {
		writeError(w, http.StatusInternalServerError, codeStoreError, "%v", err)
		return
	}
	if msgs := s.check(level, parsed, against); len(msgs) > 0 {
		writeError(w, http.StatusConflict, codeIncompatible,
			"Schema being registered is incompatible with an earlier schema for subject %q (compatibility %s), details: [%s]",
			subject, level, strings.Join(msgs, "; "))
		return
	}
	status, out := s.call(http.MethodPost, "/subjects/"+subjectPath(subject)+"/versions", body)
	if status != http.StatusOK || s.store == nil {
		forward(w, status, out)
		return
	}
	id, version, ok := s.lookup(subject, body)
	if !ok {
		writeError(w, http.StatusInternalServerError, codeStoreError, "schema registered under %q but not found again", subject)
		return
	}
	v := schemaValue{Subject: subject, Version: version, ID: id, Schema: in.Schema}
	if _, err := s.store.put(req.Context(), mustJSON(schemaKey{KeyType: "SCHEMA", Subject: subject, Version: version, Magic: 1}), mustJSON(v)); err != nil {
		// Not kept means not registered: take it back, so that what is served is what
		// a restart will serve. (srfake keeps the id reserved; the next gets a new one.)
		s.call(http.MethodDelete, "/subjects/"+subjectPath(subject)+"/versions/"+strconv.Itoa(version)+"?permanent=true", nil)
		writeError(w, http.StatusInternalServerError, codeStoreError, "store schema %s version %d: %v", subject, version, err)
		return
	}
	forward(w, status, out)
}

// level is a compatibility level.
type level string

const levelNone level = "NONE"

func (l level) transitive() bool { return strings.HasSuffix(string(l), "_TRANSITIVE") }

// parseLevel accepts the seven levels Confluent's registry has.
func parseLevel(s string) (level, bool) {
	switch l := level(s); l {
	case levelNone, "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE":
		return l, true
	}
	return "", false
}

// level returns the subject's compatibility level, or the global one.
func (s *Server) level(subject string) level {
	_, out := s.call(http.MethodGet, "/config/"+subjectPath(subject), nil)
	var got struct {
		CompatibilityLevel string `json:"compatibilityLevel"`
	}
	_ = json.Unmarshal(out, &got)
	if l, ok := parseLevel(got.CompatibilityLevel); ok {
		return l
	}
	return "BACKWARD" // srfake's default, and Confluent's
}

// storedSchema is one version of a subject.
type storedSchema struct {
	version int
	schema  avro.Schema
}

// versions returns the subject's versions to check a new schema against, oldest
// first: all of them, or the latest alone.
func (s *Server) versions(subject string, all bool) ([]storedSchema, error) {
	status, out := s.call(http.MethodGet, "/subjects/"+subjectPath(subject)+"/versions", nil)
	if status == http.StatusNotFound {
		return nil, nil
	}
	var vs []int
	if err := json.Unmarshal(out, &vs); err != nil {
		return nil, fmt.Errorf("versions of %s: %s", subject, out)
	}
	if !all && len(vs) > 1 {
		vs = vs[len(vs)-1:]
	}
	var got []storedSchema
	for _, v := range vs {
		ss, ok := s.fake.GetSchema(subject, v)
		if !ok {
			continue
		}
		p, err := parseAvro(ss.Schema.Schema)
		if err != nil {
			return nil, fmt.Errorf("stored schema %s version %d: %w", subject, v, err)
		}
		got = append(got, storedSchema{version: v, schema: p})
	}
	return got, nil
}

// check returns why schema is incompatible with each of against under l (none: it is
// compatible). BACKWARD: the new schema reads what the old ones wrote; FORWARD: the old
// ones read what the new one writes; FULL: both.
func (s *Server) check(l level, schema avro.Schema, against []storedSchema) []string {
	if l == levelNone {
		return nil
	}
	backward := !strings.HasPrefix(string(l), "FORWARD")
	forward := !strings.HasPrefix(string(l), "BACKWARD")
	var msgs []string
	for _, old := range against {
		if backward {
			if err := s.compat.Compatible(schema, old.schema); err != nil {
				msgs = append(msgs, fmt.Sprintf("version %d: the new schema cannot read its data: %v", old.version, err))
			}
		}
		if forward {
			if err := s.compat.Compatible(old.schema, schema); err != nil {
				msgs = append(msgs, fmt.Sprintf("version %d cannot read the new schema's data: %v", old.version, err))
			}
		}
	}
	return msgs
}

// handleCompatibility answers POST /compatibility/subjects/{subject}/versions[/{version}]:
// against one version (or latest), or against those the subject's level checks.
func (s *Server) handleCompatibility(w http.ResponseWriter, req *http.Request) {
	subject := req.PathValue("subject")
	_, _, parsed, ok := s.readSchema(w, req)
	if !ok {
		return
	}
	level := s.level(subject)
	var against []storedSchema
	if vs := req.PathValue("version"); vs != "" {
		status, _ := s.call(http.MethodGet, "/subjects/"+subjectPath(subject)+"/versions", nil)
		if status == http.StatusNotFound {
			writeError(w, http.StatusNotFound, codeSubjectNotFound, "Subject '%s' not found.", subject)
			return
		}
		var v int
		var ss sr.SubjectSchema
		var found bool
		if vs == "latest" {
			status, out := s.call(http.MethodGet, "/subjects/"+subjectPath(subject)+"/versions/latest", nil)
			found = status == http.StatusOK && json.Unmarshal(out, &ss) == nil
			v = ss.Version
		} else {
			var err error
			if v, err = strconv.Atoi(vs); err != nil || v < 1 {
				writeError(w, http.StatusUnprocessableEntity, codeInvalidVersion, "The specified version '%s' is not a valid version id.", vs)
				return
			}
			ss, found = s.fake.GetSchema(subject, v)
		}
		if !found {
			writeError(w, http.StatusNotFound, codeVersionNotFound, "Version %s not found.", vs)
			return
		}
		p, err := parseAvro(ss.Schema.Schema)
		if err != nil {
			writeError(w, http.StatusInternalServerError, codeStoreError, "stored schema %s version %d: %v", subject, v, err)
			return
		}
		against = []storedSchema{{version: v, schema: p}}
	} else {
		var err error
		if against, err = s.versions(subject, level.transitive()); err != nil {
			writeError(w, http.StatusInternalServerError, codeStoreError, "%v", err)
			return
		}
	}
	msgs := s.check(level, parsed, against)
	resp := map[string]any{"is_compatible": len(msgs) == 0}
	if req.URL.Query().Get("verbose") == "true" {
		if msgs == nil {
			msgs = []string{}
		}
		resp["messages"] = msgs
	}
	writeJSON(w, http.StatusOK, resp)
}

// handlePutConfig stores a compatibility level, global or of a subject, then applies it.
func (s *Server) handlePutConfig(w http.ResponseWriter, req *http.Request) {
	var in struct {
		Compatibility string `json:"compatibility"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, req.Body, 1<<10)).Decode(&in); err != nil {
		writeError(w, http.StatusUnprocessableEntity, codeInvalidCompat, "invalid request: %v", err)
		return
	}
	l, ok := parseLevel(in.Compatibility)
	if !ok {
		writeError(w, http.StatusUnprocessableEntity, codeInvalidCompat,
			"Invalid compatibility level %q. Valid values are NONE, BACKWARD, FORWARD, FULL, BACKWARD_TRANSITIVE, FORWARD_TRANSITIVE, FULL_TRANSITIVE", in.Compatibility)
		return
	}
	var subject *string
	path := "/config"
	if sub := req.PathValue("subject"); sub != "" {
		subject = &sub
		path += "/" + subjectPath(sub)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.store != nil {
		if _, err := s.store.put(req.Context(), mustJSON(configKey{KeyType: "CONFIG", Subject: subject}), mustJSON(configValue{CompatibilityLevel: string(l)})); err != nil {
			writeError(w, http.StatusInternalServerError, codeStoreError, "store compatibility level: %v", err)
			return
		}
	}
	status, out := s.call(http.MethodPut, path, mustJSON(map[string]string{"compatibility": string(l)}))
	forward(w, status, out)
}

// handleDeleteConfig stores a tombstone for the subject's level, then removes it.
func (s *Server) handleDeleteConfig(w http.ResponseWriter, req *http.Request) {
	subject := req.PathValue("subject")
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.store != nil {
		if _, err := s.store.put(req.Context(), mustJSON(configKey{KeyType: "CONFIG", Subject: &subject}), nil); err != nil {
			writeError(w, http.StatusInternalServerError, codeStoreError, "store compatibility level: %v", err)
			return
		}
	}
	status, out := s.call(http.MethodDelete, "/config/"+subjectPath(subject), nil)
	forward(w, status, out)
}

// replayer applies the stored records to a fresh srfake, in the order they were
// written.
type replayer struct {
	s    *Server
	seen map[int]string // schema id -> schema, of the records replayed so far
}

func (r replayer) apply(rec *kgo.Record) error {
	if err := r.applyRecord(rec); err != nil {
		return fmt.Errorf("%w: %w", ErrReplay, err)
	}
	return nil
}

func (r replayer) applyRecord(rec *kgo.Record) error {
	var k anyKey
	if err := json.Unmarshal(rec.Key, &k); err != nil {
		return fmt.Errorf("key: %w", err)
	}
	switch k.KeyType {
	case "NOOP":
		return nil
	case "CONFIG":
		return r.applyConfig(k.Subject, rec.Value)
	case "SCHEMA":
		if rec.Value == nil {
			return errors.New("a deleted schema (tombstone): the embedded registry never writes one")
		}
		var v schemaValue
		if err := json.Unmarshal(rec.Value, &v); err != nil {
			return fmt.Errorf("value: %w", err)
		}
		return r.applySchema(v)
	default:
		return fmt.Errorf("keytype %q is not supported by the embedded registry", k.KeyType)
	}
}

func (r replayer) applyConfig(subject *string, value []byte) error {
	path := "/config"
	if subject != nil {
		path += "/" + subjectPath(*subject)
	}
	if value == nil {
		if subject == nil {
			value = mustJSON(configValue{CompatibilityLevel: "BACKWARD"})
		} else {
			if status, out := r.s.call(http.MethodDelete, path, nil); status != http.StatusOK {
				return fmt.Errorf("remove level of %s: %s", *subject, out)
			}
			return nil
		}
	}
	var v configValue
	if err := json.Unmarshal(value, &v); err != nil {
		return fmt.Errorf("value: %w", err)
	}
	if _, ok := parseLevel(v.CompatibilityLevel); !ok {
		return fmt.Errorf("compatibility level %q", v.CompatibilityLevel)
	}
	if status, out := r.s.call(http.MethodPut, path, mustJSON(map[string]string{"compatibility": v.CompatibilityLevel})); status != http.StatusOK {
		return fmt.Errorf("set level %s: %s", v.CompatibilityLevel, out)
	}
	return nil
}

// applySchema re-creates one registration with its id and version. srfake's SeedSchema
// takes both, but panics on an id it already has: a schema that was registered under
// a second subject (and got the id it has under the first) is registered again
// instead, and must come back with the same id and version.
func (r replayer) applySchema(v schemaValue) (err error) {
	if v.Deleted {
		return fmt.Errorf("schema %s version %d is soft-deleted: the embedded registry never writes one", v.Subject, v.Version)
	}
	if v.SchemaType != "" && v.SchemaType != "AVRO" || len(v.References) > 0 {
		return fmt.Errorf("schema %s version %d: only AVRO schemas without references are supported", v.Subject, v.Version)
	}
	sch := sr.Schema{Schema: v.Schema, Type: sr.TypeAvro}
	if have, ok := r.s.fake.GetSchema(v.Subject, v.Version); ok {
		if have.ID != v.ID || !sameSchema(have.Schema.Schema, v.Schema) {
			return fmt.Errorf("schema %s version %d: stored twice, as id %d and id %d", v.Subject, v.Version, have.ID, v.ID)
		}
		return nil // written twice (a retried write)
	}
	if prev, ok := r.seen[v.ID]; ok {
		if !sameSchema(prev, v.Schema) {
			return fmt.Errorf("schema id %d: stored with two different schemas", v.ID)
		}
		id, version, err := r.s.fake.RegisterSchema(v.Subject, sch)
		if err != nil {
			return fmt.Errorf("register %s version %d again: %w", v.Subject, v.Version, err)
		}
		if id != v.ID || version != v.Version {
			return fmt.Errorf("register %s again: got id %d version %d, want id %d version %d", v.Subject, id, version, v.ID, v.Version)
		}
		return nil
	}
	defer func() {
		if p := recover(); p != nil { // SeedSchema reports a conflict by panicking
			err = fmt.Errorf("seed %s version %d id %d: %v", v.Subject, v.Version, v.ID, p)
		}
	}()
	r.s.fake.SeedSchema(v.Subject, v.Version, v.ID, sch)
	r.seen[v.ID] = v.Schema
	return nil
}

// sameSchema compares two schemas as srfake does: as JSON, whatever the spacing.
func sameSchema(a, b string) bool {
	if a == b {
		return true
	}
	var va, vb any
	if json.Unmarshal([]byte(a), &va) != nil || json.Unmarshal([]byte(b), &vb) != nil {
		return false
	}
	return bytes.Equal(mustJSON(va), mustJSON(vb))
}
