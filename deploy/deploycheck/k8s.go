package deploycheck

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// K8sDoc is one document of a YAML file under deploy/k8s.
type K8sDoc struct {
	Path string // from the repository root
	Doc  map[string]any
}

// K8sDocs returns every document of every YAML file under deploy/k8s, kustomizations
// included.
func K8sDocs(t testing.TB, root string) []K8sDoc {
	t.Helper()
	var out []K8sDoc
	err := filepath.WalkDir(filepath.Join(root, "deploy", "k8s"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if ext := filepath.Ext(path); ext != ".yaml" && ext != ".yml" {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		for _, doc := range YAMLDocs(t, path) {
			out = append(out, K8sDoc{Path: rel, Doc: doc})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// IsKustomization reports whether d is a kustomization rather than a manifest.
func IsKustomization(d K8sDoc) bool {
	return AtString(d.Doc, "kind") == "Kustomization" || strings.HasPrefix(filepath.Base(d.Path), "kustomization.")
}

// envSource is a ConfigMap or a Secret: its keys, and their values where the files say.
type envSource struct {
	Kind   string
	Name   string
	Values map[string]string
}

// k8sEnvSources collects the ConfigMaps and Secrets of deploy/k8s, written out or made by
// a kustomization's generators, by kind and name.
func k8sEnvSources(t testing.TB, docs []K8sDoc) map[string]envSource {
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
		if IsKustomization(d) {
			for kind, key := range map[string]string{"ConfigMap": "configMapGenerator", "Secret": "secretGenerator"} {
				for _, g := range AtList(d.Doc, key) {
					if at(g, "envs") != nil || at(g, "files") != nil || at(g, "env") != nil {
						t.Fatalf("%s: %s %s: only literals are read by these tests", d.Path, key, AtString(g, "name"))
					}
					s := envSource{Kind: kind, Name: AtString(g, "name"), Values: map[string]string{}}
					for _, l := range AtList(g, "literals") {
						k, v, ok := strings.Cut(fmt.Sprint(l), "=")
						if !ok {
							t.Fatalf("%s: %s %s: literal %q is not KEY=VALUE", d.Path, key, s.Name, l)
						}
						s.Values[k] = v
					}
					if AtString(g, "behavior") == "" || AtString(g, "behavior") == "create" {
						add(d.Path, s)
					}
				}
			}
			continue
		}
		kind := AtString(d.Doc, "kind")
		if kind != "ConfigMap" && kind != "Secret" {
			continue
		}
		s := envSource{Kind: kind, Name: AtString(d.Doc, "metadata", "name"), Values: map[string]string{}}
		for _, key := range []string{"data", "stringData"} {
			for k, v := range atMap(d.Doc, key) {
				s.Values[k] = fmt.Sprint(v) // base64 for a Secret's data: only the keys matter then
			}
		}
		add(d.Path, s)
	}
	return out
}

// K8sContainer is a container of a workload under deploy/k8s, with the environment it
// gets: from env, and from the ConfigMaps and Secrets of envFrom.
type K8sContainer struct {
	Where    string // file, workload and container, for messages
	Workload map[string]any
	Pod      map[string]any // the pod template's spec
	Def      map[string]any
	Env      map[string]string // variable to value; "" when the value is not in the files
}

// K8sContainers returns the containers whose image is image (before kustomize's images
// transformer), from every Deployment, StatefulSet, DaemonSet, Job and CronJob.
func K8sContainers(t testing.TB, docs []K8sDoc, image string) []K8sContainer {
	t.Helper()
	sources := k8sEnvSources(t, docs)
	var out []K8sContainer
	for _, d := range docs {
		var pod map[string]any
		switch AtString(d.Doc, "kind") {
		case "Deployment", "StatefulSet", "DaemonSet", "Job":
			pod = atMap(d.Doc, "spec", "template", "spec")
		case "CronJob":
			pod = atMap(d.Doc, "spec", "jobTemplate", "spec", "template", "spec")
		default:
			continue
		}
		for _, list := range []string{"initContainers", "containers"} {
			for _, c := range AtList(pod, list) {
				cm := c.(map[string]any)
				if name, _, _ := strings.Cut(AtString(cm, "image"), ":"); name != image {
					continue
				}
				kc := K8sContainer{
					Where:    fmt.Sprintf("%s: %s %s, container %s", d.Path, AtString(d.Doc, "kind"), AtString(d.Doc, "metadata", "name"), AtString(cm, "name")),
					Workload: d.Doc, Pod: pod, Def: cm, Env: map[string]string{},
				}
				for _, from := range AtList(cm, "envFrom") {
					for kind, key := range map[string]string{"ConfigMap": "configMapRef", "Secret": "secretRef"} {
						ref := atMap(from, key)
						if ref == nil {
							continue
						}
						if AtString(from, "prefix") != "" {
							t.Fatalf("%s: envFrom with a prefix is not checked by these tests", kc.Where)
						}
						src, ok := sources[kind+"/"+AtString(ref, "name")]
						if !ok {
							t.Fatalf("%s: envFrom %s %q: not defined under deploy/k8s", kc.Where, kind, AtString(ref, "name"))
						}
						for k, v := range src.Values {
							if kind == "Secret" {
								v = ""
							}
							kc.Env[k] = v
						}
					}
				}
				for _, e := range AtList(cm, "env") {
					kc.Env[AtString(e, "name")] = AtString(e, "value")
				}
				out = append(out, kc)
			}
		}
	}
	return out
}

// CheckContainer checks what every Sluice container needs: probes on the service's
// port (/readyz for readiness, /healthz for liveness), resources, a locked-down
// securityContext.
func CheckContainer(t testing.TB, c K8sContainer, port int) {
	t.Helper()
	namedPorts := map[string]int{}
	found := false
	for _, p := range AtList(c.Def, "ports") {
		n, _ := strconv.Atoi(AtString(p, "containerPort"))
		namedPorts[AtString(p, "name")] = n
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
		if got := AtString(get, "path"); got != path {
			t.Errorf("%s: got path %q, want %q", probe, got, path)
		}
		p, err := strconv.Atoi(AtString(get, "port"))
		if err != nil {
			p = namedPorts[AtString(get, "port")]
		}
		if p != port {
			t.Errorf("%s: got port %q (%d), want %d", probe, AtString(get, "port"), p, port)
		}
	}
	if sp := atMap(c.Def, "startupProbe", "httpGet"); sp != nil && AtString(sp, "path") != "/healthz" {
		t.Errorf("startupProbe: got path %q, want /healthz", AtString(sp, "path"))
	}
	for _, kind := range []string{"requests", "limits"} {
		for _, r := range []string{"cpu", "memory"} {
			if AtString(c.Def, "resources", kind, r) == "" {
				t.Errorf("resources.%s.%s: want it set", kind, r)
			}
		}
	}
	sc := atMap(c.Def, "securityContext")
	for key, want := range map[string]string{"readOnlyRootFilesystem": "true", "allowPrivilegeEscalation": "false"} {
		if got := AtString(sc, key); got != want {
			t.Errorf("securityContext.%s: got %q, want %s", key, got, want)
		}
	}
	if drop := AtList(sc, "capabilities", "drop"); !slices.Contains(drop, any("ALL")) {
		t.Errorf("securityContext.capabilities.drop: got %v, want ALL", drop)
	}
}

// CheckPodSpec checks the pod runs as non-root and gives the service time to drain.
func CheckPodSpec(t testing.TB, c K8sContainer, shutdown time.Duration) {
	t.Helper()
	nonRoot := AtString(c.Pod, "securityContext", "runAsNonRoot") == "true" || AtString(c.Def, "securityContext", "runAsNonRoot") == "true"
	if !nonRoot {
		t.Errorf("want runAsNonRoot: true on the pod or the container")
	}
	uid := AtString(c.Pod, "securityContext", "runAsUser") + AtString(c.Def, "securityContext", "runAsUser")
	if uid == "" || uid == "0" {
		t.Errorf("runAsUser: got %q, want a numeric non-root user", uid)
	}
	grace, err := strconv.ParseFloat(AtString(c.Pod, "terminationGracePeriodSeconds"), 64)
	if err != nil {
		grace = 30 // Kubernetes' default
	}
	preStop, _ := strconv.ParseFloat(AtString(c.Def, "lifecycle", "preStop", "sleep", "seconds"), 64)
	if grace <= preStop+shutdown.Seconds() {
		t.Errorf("terminationGracePeriodSeconds %gs: want more than preStop %gs + SHUTDOWN_TIMEOUT %gs", grace, preStop, shutdown.Seconds())
	}
}

// CheckServiceAndPDB checks a Service and a PodDisruptionBudget select the workload's
// pods, the Service on the container's port.
func CheckServiceAndPDB(t testing.TB, docs []K8sDoc, c K8sContainer, port int) {
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
		switch AtString(d.Doc, "kind") {
		case "Service":
			if !selects(atMap(d.Doc, "spec", "selector")) {
				continue
			}
			svc = true
			ok := false
			for _, p := range AtList(d.Doc, "spec", "ports") {
				tp := AtString(p, "targetPort")
				n, err := strconv.Atoi(tp)
				if err != nil {
					for _, cp := range AtList(c.Def, "ports") {
						if AtString(cp, "name") == tp {
							n, _ = strconv.Atoi(AtString(cp, "containerPort"))
						}
					}
				}
				ok = ok || n == port
			}
			if !ok {
				t.Errorf("%s: Service %s does not forward to port %d", d.Path, AtString(d.Doc, "metadata", "name"), port)
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

// StrimziTopics reads the KafkaTopic resources under deploy/k8s: topic name to spec.
func StrimziTopics(t testing.TB, root string) map[string]Topic {
	t.Helper()
	out := map[string]Topic{}
	for _, d := range K8sDocs(t, root) {
		if AtString(d.Doc, "kind") != "KafkaTopic" {
			continue
		}
		meta := AtString(d.Doc, "metadata", "name")
		if got := AtString(d.Doc, "apiVersion"); got != "kafka.strimzi.io/v1" {
			t.Errorf("%s: KafkaTopic %s: got apiVersion %q, want kafka.strimzi.io/v1", d.Path, meta, got)
		}
		if AtString(d.Doc, "metadata", "labels", "strimzi.io/cluster") == "" {
			t.Errorf("%s: KafkaTopic %s: no strimzi.io/cluster label: no Topic Operator will act on it", d.Path, meta)
		}
		name := AtString(d.Doc, "spec", "topicName")
		if name == "" {
			name = meta
		}
		spec := Topic{Where: d.Path + " KafkaTopic " + meta, Configs: map[string]string{}}
		spec.Partitions, _ = strconv.Atoi(AtString(d.Doc, "spec", "partitions"))
		spec.Replicas, _ = strconv.Atoi(AtString(d.Doc, "spec", "replicas"))
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
