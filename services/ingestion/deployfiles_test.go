package main

// Readers of the deployment files (docker-compose.yml, deploy/k8s, the Dockerfiles, the
// Grafana dashboard, the Prometheus rules) for the deploy tests. The file is the same,
// byte for byte, in services/processing and services/ingestion: each module builds on its
// own, so they cannot share a test package, and TestDeployHelpersIdentical keeps the two
// copies equal. What each service checks is in its deploy_test.go.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// deployRoot is the repository root; the tests run in services/<name>.
func deployRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "docker-compose.yml")); err != nil {
		t.Fatalf("repository root %s: %v", root, err)
	}
	return root
}

// yamlDocs decodes every document of a YAML file (merge keys and anchors resolved).
func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var docs []map[string]any
	dec := yaml.NewDecoder(f)
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("parse %s: %v", path, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

// at walks maps by key; it returns nil when a key is missing or a value is not a map.
func at(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func atMap(v any, keys ...string) map[string]any {
	m, _ := at(v, keys...).(map[string]any)
	return m
}

func atList(v any, keys ...string) []any {
	l, _ := at(v, keys...).([]any)
	return l
}

func atString(v any, keys ...string) string {
	switch s := at(v, keys...).(type) {
	case nil:
		return ""
	case string:
		return s
	default:
		return fmt.Sprint(s)
	}
}

// configDefault is the envDefault of the field of cfg (a struct, embedded structs
// included) that reads the environment variable key.
func configDefault(t *testing.T, cfg any, key string) string {
	t.Helper()
	var find func(reflect.Type) (string, bool)
	find = func(rt reflect.Type) (string, bool) {
		for i := range rt.NumField() {
			f := rt.Field(i)
			if f.Anonymous && f.Type.Kind() == reflect.Struct {
				if d, ok := find(f.Type); ok {
					return d, true
				}
				continue
			}
			if f.Tag.Get("env") == key {
				return f.Tag.Get("envDefault"), true
			}
		}
		return "", false
	}
	d, ok := find(reflect.TypeOf(cfg))
	if !ok {
		t.Fatalf("no configuration field reads %s", key)
	}
	return d
}

// addrPort is the port of a listen address such as ":8080".
func addrPort(t *testing.T, addr string) int {
	t.Helper()
	i := strings.LastIndex(addr, ":")
	p, err := strconv.Atoi(addr[i+1:])
	if i < 0 || err != nil {
		t.Fatalf("listen address %q has no port", addr)
	}
	return p
}

// composeService is a service of docker-compose.yml.
type composeService struct {
	Name string
	Env  map[string]string
	Def  map[string]any
}

// composeServices returns the services of docker-compose.yml built from dockerfile (a
// path from the repository root).
func composeServices(t *testing.T, root, dockerfile string) []composeService {
	t.Helper()
	docs := yamlDocs(t, filepath.Join(root, "docker-compose.yml"))
	if len(docs) != 1 {
		t.Fatalf("docker-compose.yml: got %d documents, want 1", len(docs))
	}
	var out []composeService
	for name, def := range atMap(docs[0], "services") {
		if filepath.Clean(atString(def, "build", "dockerfile")) != filepath.Clean(dockerfile) {
			continue
		}
		s := composeService{Name: name, Env: map[string]string{}, Def: def.(map[string]any)}
		switch env := at(def, "environment").(type) {
		case map[string]any:
			for k, v := range env {
				if v == nil {
					s.Env[k] = ""
				} else {
					s.Env[k] = fmt.Sprint(v)
				}
			}
		case []any:
			for _, e := range env {
				k, v, _ := strings.Cut(fmt.Sprint(e), "=")
				s.Env[k] = v
			}
		case nil:
		default:
			t.Fatalf("docker-compose.yml: service %s: environment is a %T", name, env)
		}
		if at(def, "env_file") != nil {
			t.Fatalf("docker-compose.yml: service %s: env_file is not checked by these tests; set environment instead", name)
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b composeService) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// topicSpec is a topic as a deployment file creates it.
type topicSpec struct {
	Where      string
	Partitions int
	Replicas   int
	Configs    map[string]string
}

// composeTopics reads the `kafka-topics.sh --create` commands in docker-compose.yml's
// service commands: topic name to spec.
func composeTopics(t *testing.T, root string) map[string]topicSpec {
	t.Helper()
	docs := yamlDocs(t, filepath.Join(root, "docker-compose.yml"))
	out := map[string]topicSpec{}
	for name, def := range atMap(docs[0], "services") {
		var script []string
		for _, key := range []string{"entrypoint", "command"} {
			switch c := at(def, key).(type) {
			case string:
				script = append(script, c)
			case []any:
				for _, s := range c {
					script = append(script, fmt.Sprint(s))
				}
			}
		}
		text := strings.ReplaceAll(strings.Join(script, "\n"), "\\\n", " ")
		for _, line := range strings.Split(text, "\n") {
			fields := strings.Fields(line)
			if !slices.ContainsFunc(fields, func(f string) bool { return strings.HasSuffix(f, "kafka-topics.sh") }) ||
				!slices.Contains(fields, "--create") {
				continue
			}
			spec := topicSpec{Where: "docker-compose.yml service " + name, Configs: map[string]string{}}
			topic := ""
			for i := 0; i+1 < len(fields); i++ {
				switch v := fields[i+1]; fields[i] {
				case "--topic":
					topic = v
				case "--partitions":
					spec.Partitions, _ = strconv.Atoi(v)
				case "--replication-factor":
					spec.Replicas, _ = strconv.Atoi(v)
				case "--config":
					k, val, _ := strings.Cut(v, "=")
					spec.Configs[k] = val
				}
			}
			if topic == "" {
				t.Fatalf("%s: kafka-topics.sh --create without --topic: %s", spec.Where, line)
			}
			if _, dup := out[topic]; dup {
				t.Fatalf("%s: topic %s created twice", spec.Where, topic)
			}
			out[topic] = spec
		}
	}
	return out
}

// k8sDoc is one document of a YAML file under deploy/k8s.
type k8sDoc struct {
	Path string // from the repository root
	Doc  map[string]any
}

// k8sDocs returns every document of every YAML file under deploy/k8s, kustomizations
// included.
func k8sDocs(t *testing.T, root string) []k8sDoc {
	t.Helper()
	var out []k8sDoc
	err := filepath.WalkDir(filepath.Join(root, "deploy", "k8s"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if ext := filepath.Ext(path); ext != ".yaml" && ext != ".yml" {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		for _, doc := range yamlDocs(t, path) {
			out = append(out, k8sDoc{Path: rel, Doc: doc})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func isKustomization(d k8sDoc) bool {
	return atString(d.Doc, "kind") == "Kustomization" || strings.HasPrefix(filepath.Base(d.Path), "kustomization.")
}

// envSource is a ConfigMap or a Secret: its keys, and their values where the files say.
type envSource struct {
	Kind   string
	Name   string
	Values map[string]string
}

// k8sEnvSources collects the ConfigMaps and Secrets of deploy/k8s, written out or made by
// a kustomization's generators, by kind and name.
func k8sEnvSources(t *testing.T, docs []k8sDoc) map[string]envSource {
	t.Helper()
	out := map[string]envSource{}
	add := func(where string, s envSource) {
		id := s.Kind + "/" + s.Name
		if _, dup := out[id]; dup {
			t.Fatalf("%s: %s defined twice", where, id)
		}
		out[id] = s
	}
	for _, d := range docs {
		if isKustomization(d) {
			for kind, key := range map[string]string{"ConfigMap": "configMapGenerator", "Secret": "secretGenerator"} {
				for _, g := range atList(d.Doc, key) {
					if at(g, "envs") != nil || at(g, "files") != nil || at(g, "env") != nil {
						t.Fatalf("%s: %s %s: only literals are read by these tests", d.Path, key, atString(g, "name"))
					}
					s := envSource{Kind: kind, Name: atString(g, "name"), Values: map[string]string{}}
					for _, l := range atList(g, "literals") {
						k, v, ok := strings.Cut(fmt.Sprint(l), "=")
						if !ok {
							t.Fatalf("%s: %s %s: literal %q is not KEY=VALUE", d.Path, key, s.Name, l)
						}
						s.Values[k] = v
					}
					if atString(g, "behavior") == "" || atString(g, "behavior") == "create" {
						add(d.Path, s)
					}
				}
			}
			continue
		}
		kind := atString(d.Doc, "kind")
		if kind != "ConfigMap" && kind != "Secret" {
			continue
		}
		s := envSource{Kind: kind, Name: atString(d.Doc, "metadata", "name"), Values: map[string]string{}}
		for _, key := range []string{"data", "stringData"} {
			for k, v := range atMap(d.Doc, key) {
				s.Values[k] = fmt.Sprint(v) // base64 for a Secret's data: only the keys matter then
			}
		}
		add(d.Path, s)
	}
	return out
}

// k8sContainer is a container of a workload under deploy/k8s, with the environment it
// gets: from env, and from the ConfigMaps and Secrets of envFrom.
type k8sContainer struct {
	Where    string // file, workload and container, for messages
	Workload map[string]any
	Pod      map[string]any // the pod template's spec
	Def      map[string]any
	Env      map[string]string // variable to value; "" when the value is not in the files
}

// k8sContainers returns the containers whose image is image (before kustomize's images
// transformer), from every Deployment, StatefulSet, DaemonSet, Job and CronJob.
func k8sContainers(t *testing.T, docs []k8sDoc, image string) []k8sContainer {
	t.Helper()
	sources := k8sEnvSources(t, docs)
	var out []k8sContainer
	for _, d := range docs {
		var pod map[string]any
		switch atString(d.Doc, "kind") {
		case "Deployment", "StatefulSet", "DaemonSet", "Job":
			pod = atMap(d.Doc, "spec", "template", "spec")
		case "CronJob":
			pod = atMap(d.Doc, "spec", "jobTemplate", "spec", "template", "spec")
		default:
			continue
		}
		for _, list := range []string{"initContainers", "containers"} {
			for _, c := range atList(pod, list) {
				cm := c.(map[string]any)
				if name, _, _ := strings.Cut(atString(cm, "image"), ":"); name != image {
					continue
				}
				kc := k8sContainer{
					Where:    fmt.Sprintf("%s: %s %s, container %s", d.Path, atString(d.Doc, "kind"), atString(d.Doc, "metadata", "name"), atString(cm, "name")),
					Workload: d.Doc, Pod: pod, Def: cm, Env: map[string]string{},
				}
				for _, from := range atList(cm, "envFrom") {
					for kind, key := range map[string]string{"ConfigMap": "configMapRef", "Secret": "secretRef"} {
						ref := atMap(from, key)
						if ref == nil {
							continue
						}
						if atString(from, "prefix") != "" {
							t.Fatalf("%s: envFrom with a prefix is not checked by these tests", kc.Where)
						}
						src, ok := sources[kind+"/"+atString(ref, "name")]
						if !ok {
							t.Fatalf("%s: envFrom %s %q: not defined under deploy/k8s", kc.Where, kind, atString(ref, "name"))
						}
						for k, v := range src.Values {
							if kind == "Secret" {
								v = ""
							}
							kc.Env[k] = v
						}
					}
				}
				for _, e := range atList(cm, "env") {
					kc.Env[atString(e, "name")] = atString(e, "value")
				}
				out = append(out, kc)
			}
		}
	}
	return out
}

// dockerInstruction is one instruction of a Dockerfile, continuation lines joined.
type dockerInstruction struct {
	Cmd  string // upper case: FROM, RUN, ...
	Args string
}

// dockerStages parses a Dockerfile into its stages; instructions before the first FROM
// (global ARGs) are stage 0.
func dockerStages(t *testing.T, path string) [][]dockerInstruction {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	stages := [][]dockerInstruction{nil}
	var cur strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		cur.Reset()
		in := dockerInstruction{Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args)}
		if in.Cmd == "FROM" {
			stages = append(stages, nil)
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
	}
	if cur.Len() > 0 {
		t.Fatalf("%s: ends in a continuation line", path)
	}
	return stages
}

// execForm parses the JSON array of an exec-form instruction (CMD ["/app", "x"]); it
// returns nil for the shell form.
func execForm(args string) []string {
	var out []string
	if err := json.Unmarshal([]byte(args), &out); err != nil {
		return nil
	}
	return out
}

// duration parses a Go duration from the configuration ("20s").
func duration(t *testing.T, what, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return d
}

// promQuery is what the checks need from a PromQL expression: the series selectors and
// the labels of its by/without/on/ignoring/group_left/group_right clauses.
type promQuery struct {
	Selectors []promSelector
	Grouping  []string
}

type promSelector struct {
	Metric   string
	Matchers []promMatcher
}

type promMatcher struct {
	Label, Op, Value string
}

var (
	promIdent    = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true}
	// Aggregations may put their by/without clause before the parenthesis.
	promAggregators = map[string]bool{
		"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true, "count": true,
		"count_values": true, "bottomk": true, "topk": true, "quantile": true, "limitk": true, "limit_ratio": true,
	}
	promGrouping = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}
)

// parsePromQL reads the selectors of a PromQL expression. It is no full parser, but it
// knows where metric names can be: not in strings, label matchers, ranges or after
// function names, and it fails on what it does not understand rather than skip it.
func parsePromQL(expr string) (promQuery, error) {
	var q promQuery
	s := expr
	pos := func() int { return len(expr) - len(s) }
	readString := func() (string, error) {
		quote := s[0]
		for i := 1; i < len(s); i++ {
			switch s[i] {
			case '\\':
				i++
			case quote:
				v := s[1:i]
				if quote != '`' {
					if u, err := strconv.Unquote(`"` + strings.ReplaceAll(v, `"`, `\"`) + `"`); err == nil {
						v = u
					}
				}
				s = s[i+1:]
				return v, nil
			}
		}
		return "", fmt.Errorf("unterminated string at %d in %q", pos(), expr)
	}
	skipSpace := func() { s = strings.TrimLeft(s, " \t\r\n") }
	lastMetric := false // the previous token was a metric name: a { belongs to it
	for {
		skipSpace()
		if s == "" {
			return q, nil
		}
		switch c := s[0]; {
		case c == '"' || c == '\'' || c == '`':
			if _, err := readString(); err != nil {
				return q, err
			}
			lastMetric = false
		case c == '{':
			var sel *promSelector
			if lastMetric {
				sel = &q.Selectors[len(q.Selectors)-1]
			} else {
				q.Selectors = append(q.Selectors, promSelector{})
				sel = &q.Selectors[len(q.Selectors)-1]
			}
			s = s[1:]
			for {
				skipSpace()
				if strings.HasPrefix(s, "}") {
					s = s[1:]
					break
				}
				if strings.HasPrefix(s, ",") {
					s = s[1:]
					continue
				}
				label := promIdent.FindString(s)
				if label == "" {
					return q, fmt.Errorf("bad label matcher at %d in %q", pos(), expr)
				}
				s = s[len(label):]
				skipSpace()
				op := ""
				for _, o := range []string{"=~", "!~", "!=", "="} {
					if strings.HasPrefix(s, o) {
						op = o
						break
					}
				}
				if op == "" {
					return q, fmt.Errorf("bad matcher operator at %d in %q", pos(), expr)
				}
				s = s[len(op):]
				skipSpace()
				if s == "" || !strings.ContainsRune("\"'`", rune(s[0])) {
					return q, fmt.Errorf("matcher %s without a string at %d in %q", label, pos(), expr)
				}
				v, err := readString()
				if err != nil {
					return q, err
				}
				if label == "__name__" && op == "=" {
					sel.Metric = v
					continue
				}
				sel.Matchers = append(sel.Matchers, promMatcher{Label: label, Op: op, Value: v})
			}
			lastMetric = false
		case c == '[':
			end := strings.IndexByte(s, ']')
			if end < 0 {
				return q, fmt.Errorf("unterminated range at %d in %q", pos(), expr)
			}
			s = s[end+1:]
			lastMetric = false
		case c == '$': // a Grafana variable such as $__rate_interval
			s = s[1:]
			s = s[len(promIdent.FindString(s)):]
			lastMetric = false
		case c >= '0' && c <= '9' || c == '.':
			i := 0
			for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.' || s[i] >= 'a' && s[i] <= 'z' || s[i] >= 'A' && s[i] <= 'Z' || s[i] == '_') {
				i++
			}
			s = s[i:]
			lastMetric = false
		case promIdent.MatchString(s):
			id := promIdent.FindString(s)
			s = s[len(id):]
			rest := strings.TrimLeft(s, " \t\r\n")
			switch {
			case promGrouping[id] && strings.HasPrefix(rest, "("):
				end := strings.IndexByte(rest, ')')
				if end < 0 {
					return q, fmt.Errorf("unterminated %s ( at %d in %q", id, pos(), expr)
				}
				for _, l := range strings.Split(rest[1:end], ",") {
					if l = strings.TrimSpace(l); l != "" {
						q.Grouping = append(q.Grouping, l)
					}
				}
				s = rest[end+1:]
				lastMetric = false
			case promGrouping[id]: // group_left without labels
				lastMetric = false
			case strings.HasPrefix(rest, "("), promAggregators[id]: // a function or an aggregation
				lastMetric = false
			case promKeywords[strings.ToLower(id)]:
				lastMetric = false
			default:
				q.Selectors = append(q.Selectors, promSelector{Metric: id})
				lastMetric = true
			}
		case strings.ContainsRune("()+-*/%^,<>=!", rune(c)):
			s = s[1:]
			lastMetric = false
		default:
			return q, fmt.Errorf("unexpected %q at %d in %q", c, pos(), expr)
		}
	}
}

// promExpr is an expression of a deployment file, with where it is.
type promExpr struct {
	Where string
	Expr  string
}

// dashboardExprs returns every query of the Grafana dashboard, rows' panels included.
func dashboardExprs(t *testing.T, root string) []promExpr {
	t.Helper()
	path := filepath.Join(root, "deploy", "grafana", "sluice-dashboard.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string            `json:"title"`
		UID    string            `json:"uid"`
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	if dash.Title == "" || dash.UID == "" {
		t.Fatalf("%s: got title %q uid %q, want both set", path, dash.Title, dash.UID)
	}
	var out []promExpr
	var walk func([]json.RawMessage)
	walk = func(panels []json.RawMessage) {
		for _, raw := range panels {
			var p struct {
				Title   string            `json:"title"`
				Type    string            `json:"type"`
				Panels  []json.RawMessage `json:"panels"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			}
			if err := json.Unmarshal(raw, &p); err != nil {
				t.Fatalf("%s: panel: %v", path, err)
			}
			for _, tg := range p.Targets {
				out = append(out, promExpr{Where: "dashboard panel " + strconv.Quote(p.Title), Expr: tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	return out
}

// alertRule is a rule of deploy/prometheus/alerts.yaml.
type alertRule struct {
	Group string
	Def   map[string]any
}

func alertRules(t *testing.T, root string) []alertRule {
	t.Helper()
	docs := yamlDocs(t, filepath.Join(root, "deploy", "prometheus", "alerts.yaml"))
	if len(docs) != 1 {
		t.Fatalf("alerts.yaml: got %d documents, want 1", len(docs))
	}
	var out []alertRule
	for _, g := range atList(docs[0], "groups") {
		for _, r := range atList(g, "rules") {
			out = append(out, alertRule{Group: atString(g, "name"), Def: r.(map[string]any)})
		}
	}
	return out
}

// alertExprs is the expression of every rule of deploy/prometheus/alerts.yaml.
func alertExprs(t *testing.T, root string) []promExpr {
	t.Helper()
	var out []promExpr
	for _, r := range alertRules(t, root) {
		name := atString(r.Def, "alert") + atString(r.Def, "record")
		out = append(out, promExpr{Where: "alert rule " + name, Expr: atString(r.Def, "expr")})
	}
	return out
}

// metricInfo describes a metric family a service registers.
type metricInfo struct {
	Type   string          // counter, gauge, histogram, summary
	Labels map[string]bool // its variable labels
	// Values lists, per label, the values the label takes, when the test knows them all.
	Values map[string][]string
}

// targetLabels are the labels Prometheus adds to every scraped series.
var targetLabels = map[string]bool{"job": true, "instance": true, "namespace": true, "pod": true, "container": true, "service": true, "endpoint": true}

// checkExprs checks every selector of exprs whose metric name starts with prefix against
// the service's metrics: the name exists (a histogram's through _bucket, _sum, _count),
// each matcher's label is one of its labels, and each value one it takes when known.
// Grouping labels must be labels of a selector of the same expression. It returns the
// metrics used, so that the caller can check coverage. Names of the sluice_ namespace
// that belong to none of services are errors too; expressions that mix in another
// service's series are checked for this service's selectors only.
func checkExprs(t *testing.T, exprs []promExpr, prefix string, metrics map[string]metricInfo, services []string) map[string]bool {
	t.Helper()
	used := map[string]bool{}
	for _, e := range exprs {
		q, err := parsePromQL(e.Expr)
		if err != nil {
			t.Errorf("%s: %v", e.Where, err)
			continue
		}
		if len(q.Selectors) == 0 {
			t.Errorf("%s: %q selects no series", e.Where, e.Expr)
		}
		labels := maps.Clone(targetLabels)
		others := false // the expression has series of another service, whose labels this test does not know
		for _, sel := range q.Selectors {
			if !slices.ContainsFunc(services, func(s string) bool { return strings.HasPrefix(sel.Metric, "sluice_"+s+"_") }) {
				t.Errorf("%s: metric %q belongs to no service (want a sluice_<%s>_ name)", e.Where, sel.Metric, strings.Join(services, "|"))
				continue
			}
			if !strings.HasPrefix(sel.Metric, prefix) {
				others = true
				continue
			}
			name, info, extra := resolveMetric(sel.Metric, metrics)
			if name == "" {
				t.Errorf("%s: metric %s: the service registers no such series (a histogram is queried through _bucket, _sum and _count)", e.Where, sel.Metric)
				continue
			}
			used[name] = true
			for l := range info.Labels {
				labels[l] = true
			}
			if extra != "" {
				labels[extra] = true
			}
			for _, m := range sel.Matchers {
				if !info.Labels[m.Label] && !targetLabels[m.Label] && m.Label != extra {
					t.Errorf("%s: metric %s has no label %q", e.Where, name, m.Label)
					continue
				}
				want := info.Values[m.Label]
				if len(want) == 0 || (m.Op != "=" && m.Op != "=~") {
					continue
				}
				values := []string{m.Value}
				if m.Op == "=~" {
					if strings.ContainsAny(m.Value, `.*+?()[]{}\^$`) {
						continue // a real regular expression: cannot enumerate it
					}
					values = strings.Split(m.Value, "|")
				}
				for _, v := range values {
					if !slices.Contains(want, v) {
						t.Errorf("%s: metric %s label %s never takes the value %q (it takes %v)", e.Where, name, m.Label, v, want)
					}
				}
			}
		}
		for _, g := range q.Grouping {
			if !others && !labels[g] {
				t.Errorf("%s: grouping label %q is on no series of %q", e.Where, g, e.Expr)
			}
		}
	}
	return used
}

// resolveMetric maps a series name to its family: itself, or a histogram's or summary's
// _bucket, _sum or _count series. extra is the label the series adds (le, quantile).
func resolveMetric(series string, metrics map[string]metricInfo) (family string, info metricInfo, extra string) {
	if info, ok := metrics[series]; ok {
		if info.Type == "histogram" || info.Type == "summary" {
			if info.Type == "summary" {
				return series, info, "quantile"
			}
			return "", info, "" // a histogram has no series of its bare name
		}
		return series, info, ""
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(series, suffix)
		if !ok {
			continue
		}
		info, ok := metrics[base]
		switch {
		case !ok:
		case info.Type == "histogram" && suffix == "_bucket":
			return base, info, "le"
		case (info.Type == "histogram" || info.Type == "summary") && suffix != "_bucket":
			return base, info, ""
		}
	}
	return "", metricInfo{}, ""
}

// checkContainer checks what every Sluice container needs: probes on the service's
// port (/readyz for readiness, /healthz for liveness), resources, a locked-down
// securityContext.
func checkContainer(t *testing.T, c k8sContainer, port int) {
	t.Helper()
	namedPorts := map[string]int{}
	found := false
	for _, p := range atList(c.Def, "ports") {
		n, _ := strconv.Atoi(atString(p, "containerPort"))
		namedPorts[atString(p, "name")] = n
		found = found || n == port
	}
	if !found {
		t.Errorf("no containerPort %d (the service's listen port); ports %v", port, namedPorts)
	}
	for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
		get := atMap(c.Def, probe, "httpGet")
		if get == nil {
			t.Errorf("%s: want an httpGet probe", probe)
			continue
		}
		if got := atString(get, "path"); got != path {
			t.Errorf("%s: got path %q, want %q", probe, got, path)
		}
		p, err := strconv.Atoi(atString(get, "port"))
		if err != nil {
			p = namedPorts[atString(get, "port")]
		}
		if p != port {
			t.Errorf("%s: got port %q (%d), want %d", probe, atString(get, "port"), p, port)
		}
	}
	if sp := atMap(c.Def, "startupProbe", "httpGet"); sp != nil && atString(sp, "path") != "/healthz" {
		t.Errorf("startupProbe: got path %q, want /healthz", atString(sp, "path"))
	}
	for _, kind := range []string{"requests", "limits"} {
		for _, r := range []string{"cpu", "memory"} {
			if atString(c.Def, "resources", kind, r) == "" {
				t.Errorf("resources.%s.%s: want it set", kind, r)
			}
		}
	}
	sc := atMap(c.Def, "securityContext")
	for key, want := range map[string]string{"readOnlyRootFilesystem": "true", "allowPrivilegeEscalation": "false"} {
		if got := atString(sc, key); got != want {
			t.Errorf("securityContext.%s: got %q, want %s", key, got, want)
		}
	}
	if drop := atList(sc, "capabilities", "drop"); !slices.Contains(drop, any("ALL")) {
		t.Errorf("securityContext.capabilities.drop: got %v, want ALL", drop)
	}
}

// checkPodSpec checks the pod runs as non-root and gives the service time to drain.
func checkPodSpec(t *testing.T, c k8sContainer, shutdown time.Duration) {
	t.Helper()
	nonRoot := atString(c.Pod, "securityContext", "runAsNonRoot") == "true" || atString(c.Def, "securityContext", "runAsNonRoot") == "true"
	if !nonRoot {
		t.Errorf("want runAsNonRoot: true on the pod or the container")
	}
	uid := atString(c.Pod, "securityContext", "runAsUser") + atString(c.Def, "securityContext", "runAsUser")
	if uid == "" || uid == "0" {
		t.Errorf("runAsUser: got %q, want a numeric non-root user", uid)
	}
	grace, err := strconv.ParseFloat(atString(c.Pod, "terminationGracePeriodSeconds"), 64)
	if err != nil {
		grace = 30 // Kubernetes' default
	}
	preStop, _ := strconv.ParseFloat(atString(c.Def, "lifecycle", "preStop", "sleep", "seconds"), 64)
	if grace <= preStop+shutdown.Seconds() {
		t.Errorf("terminationGracePeriodSeconds %gs: want more than preStop %gs + SHUTDOWN_TIMEOUT %gs", grace, preStop, shutdown.Seconds())
	}
}

// checkServiceAndPDB checks a Service and a PodDisruptionBudget select the workload's
// pods, the Service on the container's port.
func checkServiceAndPDB(t *testing.T, docs []k8sDoc, c k8sContainer, port int) {
	t.Helper()
	podLabels := atMap(c.Workload, "spec", "template", "metadata", "labels")
	selects := func(sel map[string]any) bool {
		if len(sel) == 0 {
			return false
		}
		for k, v := range sel {
			if fmt.Sprint(podLabels[k]) != fmt.Sprint(v) {
				return false
			}
		}
		return true
	}
	var svc, pdb bool
	for _, d := range docs {
		switch atString(d.Doc, "kind") {
		case "Service":
			if !selects(atMap(d.Doc, "spec", "selector")) {
				continue
			}
			svc = true
			ok := false
			for _, p := range atList(d.Doc, "spec", "ports") {
				tp := atString(p, "targetPort")
				n, err := strconv.Atoi(tp)
				if err != nil {
					for _, cp := range atList(c.Def, "ports") {
						if atString(cp, "name") == tp {
							n, _ = strconv.Atoi(atString(cp, "containerPort"))
						}
					}
				}
				ok = ok || n == port
			}
			if !ok {
				t.Errorf("%s: Service %s does not forward to port %d", d.Path, atString(d.Doc, "metadata", "name"), port)
			}
		case "PodDisruptionBudget":
			pdb = pdb || selects(atMap(d.Doc, "spec", "selector", "matchLabels"))
		}
	}
	if !svc {
		t.Errorf("no Service selects the pods (labels %v)", podLabels)
	}
	if !pdb {
		t.Errorf("no PodDisruptionBudget selects the pods (labels %v)", podLabels)
	}
}

// checkDockerfile checks a service's multi-stage Dockerfile, which cannot be built where
// no base image can be pulled: a Go build stage that builds the service statically with
// -trimpath from files that exist, and a final stage from scratch or distroless that runs
// it as a numeric non-root user, exposes its port and probes it with its healthcheck
// mode. And the prebuilt image's Dockerfile probes the same way.
func checkDockerfile(t *testing.T, root, dockerfile, service string, port int) {
	t.Helper()
	stages := dockerStages(t, filepath.Join(root, dockerfile))
	if len(stages) < 3 {
		t.Fatalf("%s: got %d stages, want a build stage and a final one", dockerfile, len(stages)-1)
	}
	args := map[string]string{}
	for _, in := range stages[0] {
		if in.Cmd == "ARG" {
			k, v, _ := strings.Cut(in.Args, "=")
			args[k] = v
		}
	}
	expand := func(s string) string {
		return regexp.MustCompile(`\$\{?(\w+)\}?`).ReplaceAllStringFunc(s, func(m string) string {
			return args[strings.Trim(m, "${}")]
		})
	}
	build, final := stages[1], stages[len(stages)-1]
	if from := expand(build[0].Args); !regexp.MustCompile(`^golang:\S+ (?i:as) \w+$`).MatchString(from) {
		t.Errorf("%s: build stage FROM %q: want golang:<version> AS <name>", dockerfile, from)
	}
	var buildText strings.Builder
	for _, in := range build {
		buildText.WriteString(in.Cmd + " " + in.Args + "\n")
		if in.Cmd == "COPY" && !strings.Contains(in.Args, "--from") {
			fields := strings.Fields(in.Args)
			for _, src := range fields[:len(fields)-1] {
				if strings.HasPrefix(src, "--") {
					continue // --chown=, --link
				}
				if _, err := os.Stat(filepath.Join(root, src)); err != nil {
					t.Errorf("%s: COPY %s: not in the build context (the repository root): %v", dockerfile, src, err)
				}
			}
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "go build"} {
		if !strings.Contains(buildText.String(), want) {
			t.Errorf("%s: build stage: want %q", dockerfile, want)
		}
	}
	if !strings.Contains(buildText.String(), "services/"+service) {
		t.Errorf("%s: build stage never mentions services/%s", dockerfile, service)
	}

	from := expand(final[0].Args)
	if from != "scratch" && !regexp.MustCompile(`^gcr\.io/distroless/static[\w.-]*:nonroot$`).MatchString(from) {
		t.Errorf("%s: final stage FROM %q: want scratch or gcr.io/distroless/static...:nonroot", dockerfile, from)
	}
	last := map[string]string{}
	for _, in := range final {
		last[in.Cmd] = in.Args
	}
	if user, _, _ := strings.Cut(last["USER"], ":"); user == "" || user == "0" || strings.Trim(user, "0123456789") != "" {
		t.Errorf("%s: USER %q: want a numeric non-root user", dockerfile, last["USER"])
	}
	if got := last["EXPOSE"]; got != strconv.Itoa(port) && got != strconv.Itoa(port)+"/tcp" {
		t.Errorf("%s: EXPOSE %q: want %d", dockerfile, got, port)
	}
	entry := execForm(last["ENTRYPOINT"])
	if len(entry) != 1 {
		t.Fatalf("%s: ENTRYPOINT %q: want the binary alone, in exec form", dockerfile, last["ENTRYPOINT"])
	}
	checkHealthcheck(t, dockerfile, last["HEALTHCHECK"], entry[0])

	prebuilt := dockerStages(t, filepath.Join(root, "deploy", "docker", "Dockerfile.prebuilt"))
	plast := map[string]string{}
	for _, in := range prebuilt[len(prebuilt)-1] {
		plast[in.Cmd] = in.Args
	}
	pentry := execForm(plast["ENTRYPOINT"])
	if len(pentry) != 1 {
		t.Fatalf("Dockerfile.prebuilt: ENTRYPOINT %q: want the binary alone, in exec form", plast["ENTRYPOINT"])
	}
	checkHealthcheck(t, "Dockerfile.prebuilt", plast["HEALTHCHECK"], pentry[0])
}

// checkHealthcheck checks a HEALTHCHECK runs binary's healthcheck mode in exec form:
// the images have no shell.
func checkHealthcheck(t *testing.T, where, args, binary string) {
	t.Helper()
	_, cmd, ok := strings.Cut(args, "CMD ")
	if got := execForm(cmd); !ok || !slices.Equal(got, []string{binary, "healthcheck"}) {
		t.Errorf("%s: HEALTHCHECK %q: want CMD [%q, \"healthcheck\"] (exec form: no shell in the image)", where, args, binary)
	}
}

func equalConfigs(got, want map[string]string) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// strimziTopics reads the KafkaTopic resources under deploy/k8s: topic name to spec.
func strimziTopics(t *testing.T, root string) map[string]topicSpec {
	t.Helper()
	out := map[string]topicSpec{}
	for _, d := range k8sDocs(t, root) {
		if atString(d.Doc, "kind") != "KafkaTopic" {
			continue
		}
		meta := atString(d.Doc, "metadata", "name")
		if got := atString(d.Doc, "apiVersion"); got != "kafka.strimzi.io/v1beta2" {
			t.Errorf("%s: KafkaTopic %s: got apiVersion %q, want kafka.strimzi.io/v1beta2", d.Path, meta, got)
		}
		if atString(d.Doc, "metadata", "labels", "strimzi.io/cluster") == "" {
			t.Errorf("%s: KafkaTopic %s: no strimzi.io/cluster label: no Topic Operator will act on it", d.Path, meta)
		}
		name := atString(d.Doc, "spec", "topicName")
		if name == "" {
			name = meta
		}
		spec := topicSpec{Where: d.Path + " KafkaTopic " + meta, Configs: map[string]string{}}
		spec.Partitions, _ = strconv.Atoi(atString(d.Doc, "spec", "partitions"))
		spec.Replicas, _ = strconv.Atoi(atString(d.Doc, "spec", "replicas"))
		for k, v := range atMap(d.Doc, "spec", "config") {
			spec.Configs[k] = fmt.Sprint(v)
		}
		if _, dup := out[name]; dup {
			t.Errorf("%s: topic %s defined twice", d.Path, name)
		}
		out[name] = spec
	}
	return out
}

// githubAnchor is the anchor GitHub gives a Markdown heading.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		}
	}
	return b.String()
}
