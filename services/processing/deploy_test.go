package main

// The deployment files checked against the processing service's code: every environment
// variable they set is one the configuration reads, the probes and ports are the ones
// the service serves, the metrics the dashboard and the alerts query are ones it
// registers, and the topics are created with the settings pkg/throttle wants. The
// readers of the files are in deploy/deploycheck.

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/deploy/deploycheck"
	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/services/platform/audit"
	"github.com/sluice-dev/sluice/services/platform/envconfig"
	"github.com/sluice-dev/sluice/services/processing/internal/config"
	"github.com/sluice-dev/sluice/services/processing/internal/consume"
	"github.com/sluice-dev/sluice/services/processing/internal/detect"
	"github.com/sluice-dev/sluice/services/processing/internal/metrics"
)

const (
	deployService    = "processing"
	deployDockerfile = "services/processing/Dockerfile"
	deployImage      = "sluice-processing" // the image name in deploy/k8s, before kustomize's images
)

// configVars is every environment variable the processing configuration reads.
func configVars(t *testing.T) map[string]bool {
	t.Helper()
	vars, err := envconfig.Vars(&config.Config{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, v := range vars {
		out[v] = true
	}
	// Spot checks, so that a Vars that lists nothing cannot pass everything.
	for _, v := range []string{"KAFKA_BROKERS", "SCHEMA_REGISTRY_URL", "ADMIN_ADDR", "ADMIN_TOKEN", "LOG_LEVEL"} {
		if !out[v] {
			t.Fatalf("envconfig.Vars does not list %s; got %v", v, vars)
		}
	}
	return out
}

func TestDeployEnvIsReadByConfig(t *testing.T) {
	root := deploycheck.Root(t)
	known := configVars(t)
	check := func(where string, env map[string]string) {
		for _, k := range slices.Sorted(maps.Keys(env)) {
			if !known[k] {
				t.Errorf("%s sets %s, which the processing configuration does not read", where, k)
			}
		}
	}

	services := deploycheck.ComposeServices(t, root, deployDockerfile)
	if len(services) == 0 {
		t.Fatalf("docker-compose.yml: no service built from %s", deployDockerfile)
	}
	for _, s := range services {
		check("docker-compose.yml service "+s.Name, s.Env)
	}

	containers := deploycheck.K8sContainers(t, deploycheck.K8sDocs(t, root), deployImage)
	if len(containers) == 0 {
		t.Fatalf("deploy/k8s: no container runs image %s", deployImage)
	}
	for _, c := range containers {
		check(c.Where, c.Env)
	}
}

// The settings each deployment gives must also be valid: Validate accepts them, as the
// service would at start.
func TestDeployEnvIsValid(t *testing.T) {
	root := deploycheck.Root(t)
	envs := map[string]map[string]string{}
	for _, s := range deploycheck.ComposeServices(t, root, deployDockerfile) {
		envs["docker-compose.yml service "+s.Name] = s.Env
	}
	for _, c := range deploycheck.K8sContainers(t, deploycheck.K8sDocs(t, root), deployImage) {
		envs[c.Where] = c.Env
	}
	for where, env := range envs {
		t.Run(where, func(t *testing.T) {
			for k := range configVars(t) {
				v, ok := env[k]
				if ok && strings.Contains(v, "${") {
					v = "" // a compose interpolation, such as ${ADMIN_TOKEN:-}
				}
				t.Setenv(k, v) // restored after the test
				if !ok {
					os.Unsetenv(k)
				}
			}
			if _, ok := env["INSTANCE_ID"]; !ok {
				t.Setenv("INSTANCE_ID", "deploy-test") // the host name in production
			}
			if _, err := config.Load(); err != nil {
				t.Errorf("the configuration refuses these settings: %v", err)
			}
		})
	}
}

// valueOr is env's value of key, or the configuration's default.
func valueOr(t *testing.T, env map[string]string, key string) string {
	t.Helper()
	if v, ok := env[key]; ok && v != "" {
		return v
	}
	return deploycheck.ConfigDefault(t, config.Config{}, key)
}

func TestDeployK8sWorkload(t *testing.T) {
	root := deploycheck.Root(t)
	docs := deploycheck.K8sDocs(t, root)
	for _, c := range deploycheck.K8sContainers(t, docs, deployImage) {
		t.Run(c.Where, func(t *testing.T) {
			port := deploycheck.AddrPort(t, valueOr(t, c.Env, "ADMIN_ADDR"))
			deploycheck.CheckContainer(t, c, port)
			deploycheck.CheckPodSpec(t, c, deploycheck.ParseDuration(t, "SHUTDOWN_TIMEOUT", valueOr(t, c.Env, "SHUTDOWN_TIMEOUT")))
			deploycheck.CheckServiceAndPDB(t, docs, c, port)
		})
	}
}

func TestDeployDockerfile(t *testing.T) {
	root := deploycheck.Root(t)
	port := deploycheck.AddrPort(t, deploycheck.ConfigDefault(t, config.Config{}, "ADMIN_ADDR"))
	deploycheck.CheckDockerfile(t, root, deployDockerfile, deployService, port)
}

// processingMetrics is every metric family the processing service registers, read from
// the collectors it registers: names and labels from their descriptors, so that a vector
// with no series yet is listed too.
func processingMetrics(t *testing.T) map[string]deploycheck.Metric {
	t.Helper()
	rec := &recordingRegisterer{Registerer: prometheus.NewRegistry(), metrics: map[string]deploycheck.Metric{}, t: t}
	metrics.New(rec)
	metrics.WatchAudit(rec, func(time.Time) []audit.Row { return nil }, time.Hour, func() int64 { return 0 }, func() int64 { return 0 })
	if len(rec.metrics) < 5 {
		t.Fatalf("read %d metrics from the processing collectors, want all of them: %v", len(rec.metrics), rec.metrics)
	}
	// The label values the code uses, where they are constants.
	values := map[string][]string{
		"action":  {metrics.ActionSet, metrics.ActionRenewed, metrics.ActionLifted, metrics.ActionExpired},
		"reason":  {detect.MetricAge, detect.MetricShare, metrics.ReasonManual},
		"stage":   {consume.StageDecode, consume.StageHandler},
		"outcome": {"handled", "dead_lettered"},
		"status":  {audit.Complete, audit.Short, audit.Over, audit.Open},
		"kind":    {"accepted", "forwarded", "dead_lettered", "duplicates", "missing", "over"},
	}
	for name, info := range rec.metrics {
		for l := range info.Labels {
			if v, ok := values[l]; ok {
				info.Values[l] = v
			}
		}
		rec.metrics[name] = info
	}
	return rec.metrics
}

// recordingRegisterer records the descriptors of the collectors registered through it.
type recordingRegisterer struct {
	prometheus.Registerer
	metrics map[string]deploycheck.Metric
	t       *testing.T
}

var (
	descName   = regexp.MustCompile(`fqName: "([^"]+)"`)
	descLabels = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
)

func (r *recordingRegisterer) Register(c prometheus.Collector) error {
	typ := "untyped"
	switch c.(type) {
	case prometheus.Histogram, *prometheus.HistogramVec:
		typ = "histogram"
	case prometheus.Summary, *prometheus.SummaryVec:
		typ = "summary"
	case prometheus.Counter, *prometheus.CounterVec:
		typ = "counter"
	case prometheus.Gauge, *prometheus.GaugeVec:
		typ = "gauge"
	}
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		// Desc has no accessors; its String is stable: Desc{fqName: "...", ..., variableLabels: {a,b}}.
		s := d.String()
		name, labels := descName.FindStringSubmatch(s), descLabels.FindStringSubmatch(s)
		if name == nil || labels == nil {
			r.t.Fatalf("cannot read the name and labels of descriptor %s", s)
		}
		info := deploycheck.Metric{Type: typ, Labels: map[string]bool{}, Values: map[string][]string{}}
		for _, l := range strings.Split(labels[1], ",") {
			// A constrained label prints as c(name).
			if l = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(l), "c("), ")"); l != "" {
				info.Labels[l] = true
			}
		}
		r.metrics[name[1]] = info
	}
	return r.Registerer.Register(c)
}

func (r *recordingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func TestDeployMetricsExist(t *testing.T) {
	root := deploycheck.Root(t)
	known := processingMetrics(t)
	services := []string{"processing", "ingestion"}
	used := deploycheck.CheckExprs(t, deploycheck.DashboardExprs(t, root), "sluice_processing_", known, services)
	for _, name := range slices.Sorted(maps.Keys(known)) {
		if !used[name] {
			t.Errorf("the dashboard shows no panel of %s", name)
		}
	}
	alertsUsed := deploycheck.CheckExprs(t, deploycheck.AlertExprs(t, root), "sluice_processing_", known, services)
	if len(alertsUsed) == 0 {
		t.Errorf("no alert rule looks at a processing metric")
	}
}

// Every alert has a severity, a summary, and a runbook: its section in OPERATIONS.md.
func TestDeployAlertRunbooks(t *testing.T) {
	root := deploycheck.Root(t)
	ops, err := os.ReadFile(filepath.Join(root, "deploy", "OPERATIONS.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#{1,6} +(.+?) *$`).FindAllStringSubmatch(string(ops), -1) {
		anchors[deploycheck.GitHubAnchor(m[1])] = true
	}
	rules := deploycheck.AlertRules(t, root)
	if len(rules) == 0 {
		t.Fatal("alerts.yaml: no rules")
	}
	seen := map[string]bool{}
	for _, r := range rules {
		name := deploycheck.AtString(r.Def, "alert")
		if name == "" {
			t.Errorf("group %s: a rule without an alert name", r.Group)
			continue
		}
		if seen[name] {
			t.Errorf("alert %s defined twice", name)
		}
		seen[name] = true
		if sev := deploycheck.AtString(r.Def, "labels", "severity"); sev != "critical" && sev != "warning" && sev != "info" {
			t.Errorf("alert %s: got severity %q, want critical, warning or info", name, sev)
		}
		if deploycheck.AtString(r.Def, "annotations", "summary") == "" || deploycheck.AtString(r.Def, "annotations", "description") == "" {
			t.Errorf("alert %s: want a summary and a description", name)
		}
		url := deploycheck.AtString(r.Def, "annotations", "runbook_url")
		file, anchor, _ := strings.Cut(url, "#")
		if !strings.HasSuffix(file, "deploy/OPERATIONS.md") || !anchors[anchor] {
			t.Errorf("alert %s: runbook_url %q: want deploy/OPERATIONS.md#<a heading of it>", name, url)
		}
		if !regexp.MustCompile(`(?m)^#{1,6} +` + regexp.QuoteMeta(name) + ` *$`).Match(ops) {
			t.Errorf("alert %s: deploy/OPERATIONS.md has no section named after it", name)
		}
	}
}

// The throttle topic is created with throttle.TopicSpec's settings everywhere: by the
// compose job (one broker) and as a Strimzi KafkaTopic (three replicas). The event
// topics processing reads and writes exist too.
func TestDeployTopics(t *testing.T) {
	root := deploycheck.Root(t)
	spec := throttle.TopicSpec{}.WithDefaults()

	compose := deploycheck.ComposeTopics(t, root)
	strimzi := deploycheck.StrimziTopics(t, root)
	for _, set := range []map[string]deploycheck.Topic{compose, strimzi} {
		got, ok := set[spec.Name]
		if !ok {
			t.Errorf("topic %s: not created; topics %v", spec.Name, slices.Sorted(maps.Keys(set)))
			continue
		}
		if got.Partitions != spec.Partitions {
			t.Errorf("%s: %s: got %d partitions, want %d (never change it on a live topic)", got.Where, spec.Name, got.Partitions, spec.Partitions)
		}
		if want := spec.Configs(got.Replicas); !deploycheck.EqualConfigs(got.Configs, want) {
			t.Errorf("%s: %s configs:\n got %v\nwant %v (throttle.TopicSpec{}.Configs(%d))", got.Where, spec.Name, got.Configs, want, got.Replicas)
		}
	}
	if r := strimzi[spec.Name].Replicas; r != spec.ReplicationFactor {
		t.Errorf("KafkaTopic %s: got %d replicas, want %d", spec.Name, r, spec.ReplicationFactor)
	}

	// The event topics, under the names the deployments configure.
	for _, s := range deploycheck.ComposeServices(t, root, deployDockerfile) {
		checkEventTopics(t, "docker-compose.yml service "+s.Name, s.Env, compose)
	}
	for _, c := range deploycheck.K8sContainers(t, deploycheck.K8sDocs(t, root), deployImage) {
		checkEventTopics(t, c.Where, c.Env, strimzi)
		if got, want := valueOr(t, c.Env, "THROTTLE_TOPIC"), spec.Name; got != want {
			t.Errorf("%s: THROTTLE_TOPIC %q: the KafkaTopic is %q", c.Where, got, want)
		}
	}
}

func checkEventTopics(t *testing.T, where string, env map[string]string, topics map[string]deploycheck.Topic) {
	t.Helper()
	partitions, _ := strconv.Atoi(valueOr(t, env, "EVENTS_TOPIC_PARTITIONS"))
	for _, key := range []string{"EVENTS_TOPIC", "PROCESSED_TOPIC", "DLQ_TOPIC"} {
		name := valueOr(t, env, key)
		got, ok := topics[name]
		if !ok {
			t.Errorf("%s: %s=%s: no such topic is created", where, key, name)
			continue
		}
		if got.Configs["cleanup.policy"] != "delete" {
			t.Errorf("%s: topic %s: got cleanup.policy %q, want delete", got.Where, name, got.Configs["cleanup.policy"])
		}
		if got.Partitions != partitions {
			t.Errorf("%s: topic %s: got %d partitions, want EVENTS_TOPIC_PARTITIONS %d", got.Where, name, got.Partitions, partitions)
		}
	}
}

// Every kustomization lists files that exist, and every manifest under deploy/k8s is
// listed by the kustomization of its directory: none is forgotten by `kubectl apply -k`.
func TestDeployKustomizations(t *testing.T) {
	root := deploycheck.Root(t)
	listed := map[string]bool{}
	var kustomizations int
	for _, d := range deploycheck.K8sDocs(t, root) {
		if !deploycheck.IsKustomization(d) {
			continue
		}
		kustomizations++
		dir := filepath.Dir(d.Path)
		for _, r := range deploycheck.AtList(d.Doc, "resources") {
			p := filepath.Join(dir, fmt.Sprint(r))
			if _, err := os.Stat(filepath.Join(root, p)); err != nil {
				t.Errorf("%s: resource %s: %v", d.Path, r, err)
			}
			listed[p] = true
		}
	}
	if kustomizations == 0 {
		t.Fatal("deploy/k8s: no kustomization.yaml")
	}
	for _, d := range deploycheck.K8sDocs(t, root) {
		if !deploycheck.IsKustomization(d) && !listed[d.Path] {
			t.Errorf("%s: not listed in the resources of %s/kustomization.yaml", d.Path, filepath.Dir(d.Path))
		}
	}
}
