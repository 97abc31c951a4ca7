package main

// The deployment files checked against the ingestion service's code: every environment
// variable they set is one the configuration reads and the configuration accepts the
// values, the probes and ports are the ones the service serves, the replicas have
// distinct ids, the metrics the dashboard and the alerts query are ones it registers,
// and the topics it uses exist with their settings. The readers of the files are in
// deploy/deploycheck (shared with services/processing); the checks that concern no
// service in particular (alert runbooks, kustomization completeness) are in
// services/processing/deploy_test.go.

import (
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/sluice-dev/sluice/deploy/deploycheck"
	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/follow"
	"github.com/sluice-dev/sluice/services/ingestion/internal/config"
	"github.com/sluice-dev/sluice/services/ingestion/internal/metrics"
	"github.com/sluice-dev/sluice/services/platform/envconfig"
)

const (
	deployService    = "ingestion"
	deployDockerfile = "services/ingestion/Dockerfile"
	deployImage      = "sluice-ingestion" // the image name in deploy/k8s, before kustomize's images
)

// configVars is every environment variable the ingestion configuration reads.
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
	for _, v := range []string{"KAFKA_BROKERS", "SCHEMA_REGISTRY_URL", "HTTP_ADDR", "REPLICA_ID", "LOG_LEVEL"} {
		if !out[v] {
			t.Fatalf("envconfig.Vars does not list %s; got %v", v, vars)
		}
	}
	return out
}

// valueOr is env's value of key, or the configuration's default.
func valueOr(t *testing.T, env map[string]string, key string) string {
	t.Helper()
	if v, ok := env[key]; ok && v != "" {
		return v
	}
	return deploycheck.ConfigDefault(t, config.Config{}, key)
}

func TestDeployEnvIsReadByConfig(t *testing.T) {
	root := deploycheck.Root(t)
	known := configVars(t)
	check := func(where string, env map[string]string) {
		for _, k := range slices.Sorted(maps.Keys(env)) {
			if !known[k] {
				t.Errorf("%s sets %s, which the ingestion configuration does not read", where, k)
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
					v = "" // a compose interpolation
				}
				t.Setenv(k, v)
				if !ok {
					os.Unsetenv(k)
				}
			}
			if _, ok := env["REPLICA_ID"]; !ok {
				t.Setenv("REPLICA_ID", "deploy-test") // the host name in production
			}
			if _, err := config.Load(); err != nil {
				t.Errorf("the configuration refuses these settings: %v", err)
			}
		})
	}
}

// Replicas share each customer's limit through the membership topic, keyed by replica
// id: two replicas with one id count as one, and the fleet admits twice the limit.
func TestDeployReplicasHaveDistinctIDs(t *testing.T) {
	root := deploycheck.Root(t)
	services := deploycheck.ComposeServices(t, root, deployDockerfile)
	if len(services) < 2 {
		t.Errorf("docker-compose.yml: got %d ingestion replicas, want at least 2 (the fleet share is part of what it shows)", len(services))
	}
	ids := map[string]string{}
	ports := map[string]string{}
	for _, s := range services {
		id := s.Env["REPLICA_ID"]
		if id == "" {
			t.Errorf("docker-compose.yml service %s: REPLICA_ID unset (the container id would do, but changes at every recreation)", s.Name)
		} else if other, dup := ids[id]; dup {
			t.Errorf("docker-compose.yml services %s and %s: the same REPLICA_ID %q", other, s.Name, id)
		}
		ids[id] = s.Name
		for _, p := range deploycheck.AtList(s.Def, "ports") {
			if other, dup := ports[deploycheck.AtString(p)]; dup {
				t.Errorf("docker-compose.yml services %s and %s publish the same port %s", other, s.Name, deploycheck.AtString(p))
			}
			ports[deploycheck.AtString(p)] = s.Name
		}
		for _, key := range []string{"MEMBERS_TOPIC", "EVENTS_TOPIC", "THROTTLE_TOPIC"} {
			if got, want := valueOr(t, s.Env, key), valueOr(t, services[0].Env, key); got != want {
				t.Errorf("docker-compose.yml service %s: %s %q, but %s has %q: replicas must share it", s.Name, key, got, services[0].Name, want)
			}
		}
	}
	for _, c := range deploycheck.K8sContainers(t, deploycheck.K8sDocs(t, root), deployImage) {
		// On Kubernetes the host name is the pod name: unique per replica. A REPLICA_ID
		// in a Deployment's template would be every replica's.
		if _, set := c.Env["REPLICA_ID"]; set {
			t.Errorf("%s: sets REPLICA_ID, which every replica of the workload would share; leave it to the pod name", c.Where)
		}
		if r, err := strconv.Atoi(deploycheck.AtString(c.Workload, "spec", "replicas")); err == nil && r < 2 {
			t.Errorf("%s: %d replicas: want at least 2 to survive the loss of one", c.Where, r)
		}
	}
}

func TestDeployK8sWorkload(t *testing.T) {
	root := deploycheck.Root(t)
	docs := deploycheck.K8sDocs(t, root)
	for _, c := range deploycheck.K8sContainers(t, docs, deployImage) {
		t.Run(c.Where, func(t *testing.T) {
			port := deploycheck.AddrPort(t, valueOr(t, c.Env, "HTTP_ADDR"))
			deploycheck.CheckContainer(t, c, port)
			deploycheck.CheckPodSpec(t, c, deploycheck.ParseDuration(t, "SHUTDOWN_TIMEOUT", valueOr(t, c.Env, "SHUTDOWN_TIMEOUT")))
			deploycheck.CheckServiceAndPDB(t, docs, c, port)
		})
	}
}

func TestDeployDockerfile(t *testing.T) {
	root := deploycheck.Root(t)
	port := deploycheck.AddrPort(t, deploycheck.ConfigDefault(t, config.Config{}, "HTTP_ADDR"))
	deploycheck.CheckDockerfile(t, root, deployDockerfile, deployService, port)
}

// ingestionMetrics is every metric family the ingestion service registers, gathered
// after each one has been given a series.
func ingestionMetrics(t *testing.T) map[string]deploycheck.Metric {
	t.Helper()
	m := metrics.New()
	kinds := []string{
		throttle.ChangeSet.String(), throttle.ChangeLifted.String(),
		throttle.ChangeExpired.String(), throttle.ChangeStaleTombstone.String(),
		throttle.ChangePoisoned.String(), throttle.ChangeMoved.String(),
	}
	for _, k := range kinds {
		m.ThrottleChanged(k, time.Millisecond, false)
	}
	m.WatchTable(func() throttle.TableStats {
		return throttle.TableStats{
			Ready: true, Fresh: true, Active: 1,
			Partitions: []follow.Progress{{Partition: 0, Position: 1, End: 1, HighWatermark: 1, CaughtUp: true, Waiting: 1}},
			Poison:     map[string]int64{"bad_magic": 1},
		}
	})
	m.WatchFleet(func() (int, bool) { return 2, true })
	m.WatchBuffer(func() int64 { return 0 }, 10)
	m.WatchMirror(func(time.Time) map[string]time.Duration { return map[string]time.Duration{"a": time.Second} })
	m.WatchAudit(func() int64 { return 0 })
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]deploycheck.Metric{}
	for _, f := range families {
		info := deploycheck.Metric{Type: strings.ToLower(f.GetType().String()), Labels: map[string]bool{}, Values: map[string][]string{}}
		if f.GetType() == dto.MetricType_UNTYPED {
			info.Type = "untyped"
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				info.Labels[l.GetName()] = true
				if l.GetName() == "result" && !slices.Contains(info.Values["result"], l.GetValue()) {
					// Every result has its series from the start (resolved once in New).
					info.Values["result"] = append(info.Values["result"], l.GetValue())
				}
			}
		}
		if f.GetName() == "sluice_ingestion_throttle_changes_total" {
			info.Values["kind"] = kinds
		}
		out[f.GetName()] = info
	}
	var own int
	for name := range out {
		if strings.HasPrefix(name, "sluice_ingestion_") {
			own++
		}
	}
	if own < 10 {
		t.Fatalf("gathered %d sluice_ingestion_ metrics, want every one: %v", own, slices.Sorted(maps.Keys(out)))
	}
	return out
}

func TestDeployMetricsExist(t *testing.T) {
	root := deploycheck.Root(t)
	known := ingestionMetrics(t)
	services := []string{"processing", "ingestion"}
	used := deploycheck.CheckExprs(t, deploycheck.DashboardExprs(t, root), "sluice_ingestion_", known, services)
	for _, name := range slices.Sorted(maps.Keys(known)) {
		if strings.HasPrefix(name, "sluice_ingestion_") && !used[name] {
			t.Errorf("the dashboard shows no panel of %s", name)
		}
	}
	if len(deploycheck.CheckExprs(t, deploycheck.AlertExprs(t, root), "sluice_ingestion_", known, services)) == 0 {
		t.Errorf("no alert rule looks at an ingestion metric")
	}
}

// The topics ingestion uses exist wherever it is deployed: the membership topic with the
// settings ensureMembersTopic (main.go) creates it with, the events topic with the
// delete policy, and the throttle topic it reads.
func TestDeployTopics(t *testing.T) {
	root := deploycheck.Root(t)
	// ensureMembersTopic's spec (main.go), repeated here: keep them in step.
	members := throttle.TopicSpec{
		Partitions: 1, DeleteRetention: time.Hour, SegmentMs: 10 * time.Minute,
		MaxCompactionLag: 30 * time.Minute, MinCompactionLag: time.Minute,
	}
	check := func(where string, env map[string]string, topics map[string]deploycheck.Topic) {
		name := valueOr(t, env, "MEMBERS_TOPIC")
		if got, ok := topics[name]; !ok {
			t.Errorf("%s: MEMBERS_TOPIC=%s: no such topic is created", where, name)
		} else {
			if got.Partitions != members.Partitions {
				t.Errorf("%s: topic %s: got %d partitions, want %d", got.Where, name, got.Partitions, members.Partitions)
			}
			if want := members.Configs(got.Replicas); !deploycheck.EqualConfigs(got.Configs, want) {
				t.Errorf("%s: topic %s configs:\n got %v\nwant %v (ensureMembersTopic's, for %d replicas)", got.Where, name, got.Configs, want, got.Replicas)
			}
		}
		events := valueOr(t, env, "EVENTS_TOPIC")
		partitions, _ := strconv.Atoi(valueOr(t, env, "EVENTS_TOPIC_PARTITIONS"))
		if got, ok := topics[events]; !ok {
			t.Errorf("%s: EVENTS_TOPIC=%s: no such topic is created", where, events)
		} else if got.Configs["cleanup.policy"] != "delete" || got.Partitions != partitions {
			t.Errorf("%s: topic %s: got cleanup.policy %q and %d partitions, want delete and EVENTS_TOPIC_PARTITIONS %d",
				got.Where, events, got.Configs["cleanup.policy"], got.Partitions, partitions)
		}
		throttles := valueOr(t, env, "THROTTLE_TOPIC")
		if got, ok := topics[throttles]; !ok || got.Configs["cleanup.policy"] != "compact" {
			t.Errorf("%s: THROTTLE_TOPIC=%s: want it created, compacted", where, throttles)
		}
	}
	compose, strimzi := deploycheck.ComposeTopics(t, root), deploycheck.StrimziTopics(t, root)
	for _, s := range deploycheck.ComposeServices(t, root, deployDockerfile) {
		check("docker-compose.yml service "+s.Name, s.Env, compose)
	}
	for _, c := range deploycheck.K8sContainers(t, deploycheck.K8sDocs(t, root), deployImage) {
		check(c.Where, c.Env, strimzi)
	}
}
