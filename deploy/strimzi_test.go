package deploy

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/sluice-dev/sluice/deploy/deploycheck"
	"gopkg.in/yaml.v3"
)

// crd is one Strimzi custom resource definition: its kind and, per served version, the
// schema of that version made strict.
type crd struct {
	release, kind string
	served        map[string]*jsonschema.Schema // version ("v1") → schema
}

// loadCRDs reads every CRD under testdata/strimzi/<release>/.
func loadCRDs(t *testing.T) []crd {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "strimzi", "*", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs under testdata/strimzi (%v)", err)
	}
	var out []crd
	for _, f := range files {
		docs := deploycheck.YAMLDocs(t, f)
		if len(docs) != 1 {
			t.Fatalf("%s: %d documents, want one CRD", f, len(docs))
		}
		var def struct {
			Spec struct {
				Group string `yaml:"group"`
				Names struct {
					Kind string `yaml:"kind"`
				} `yaml:"names"`
				Versions []struct {
					Name   string `yaml:"name"`
					Served bool   `yaml:"served"`
					Schema struct {
						OpenAPIV3Schema map[string]any `yaml:"openAPIV3Schema"`
					} `yaml:"schema"`
				} `yaml:"versions"`
			} `yaml:"spec"`
		}
		remarshal(t, docs[0], &def)
		c := crd{release: filepath.Base(filepath.Dir(f)), kind: def.Spec.Names.Kind, served: map[string]*jsonschema.Schema{}}
		for _, v := range def.Spec.Versions {
			if !v.Served {
				continue
			}
			comp := jsonschema.NewCompiler()
			url := fmt.Sprintf("strimzi/%s/%s/%s.json", c.release, c.kind, v.Name)
			if err := comp.AddResource(url, strict(v.Schema.OpenAPIV3Schema)); err != nil {
				t.Fatalf("%s %s: %v", f, v.Name, err)
			}
			s, err := comp.Compile(url)
			if err != nil {
				t.Fatalf("%s %s: compile: %v", f, v.Name, err)
			}
			c.served[def.Spec.Group+"/"+v.Name] = s
		}
		out = append(out, c)
	}
	return out
}

// strict turns a CRD's OpenAPI v3 schema into the JSON Schema the API server enforces
// (pruning unknown fields, here refused): an object with properties and neither
// additionalProperties nor x-kubernetes-preserve-unknown-fields admits no other field;
// nullable admits null; x-kubernetes-int-or-string admits either.
func strict(v any) any {
	switch n := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, c := range n {
			out[k] = strict(c)
		}
		_, hasProps := n["properties"]
		_, hasAdditional := n["additionalProperties"]
		if n["type"] == "object" && hasProps && !hasAdditional && n["x-kubernetes-preserve-unknown-fields"] != true {
			out["additionalProperties"] = false
		}
		if n["nullable"] == true {
			if t, ok := n["type"].(string); ok {
				out["type"] = []any{t, "null"}
			}
		}
		if n["x-kubernetes-int-or-string"] == true {
			delete(out, "type")
			out["anyOf"] = []any{map[string]any{"type": "integer"}, map[string]any{"type": "string"}}
		}
		return out
	case []any:
		out := make([]any, len(n))
		for i, c := range n {
			out[i] = strict(c)
		}
		return out
	}
	return v
}

// resource is one Strimzi resource of the repository.
type resource struct {
	where string
	doc   map[string]any
}

// strimziResources reads every Strimzi resource under k8s/.
func strimziResources(t *testing.T) []resource {
	t.Helper()
	var out []resource
	for _, d := range deploycheck.K8sDocs(t, "..") {
		if api, _ := d.Doc["apiVersion"].(string); strings.HasPrefix(api, "kafka.strimzi.io/") {
			name, _ := d.Doc["metadata"].(map[string]any)["name"].(string)
			out = append(out, resource{fmt.Sprintf("%s %s/%s", d.Path, d.Doc["kind"], name), d.Doc})
		}
	}
	return out
}

// validate checks r against every release's CRD of its kind: its API version must be
// served there, and the resource must match that version's schema.
func validate(r resource, crds []crd) []error {
	var errs []error
	kind, _ := r.doc["kind"].(string)
	api, _ := r.doc["apiVersion"].(string)
	found := false
	for _, c := range crds {
		if c.kind != kind {
			continue
		}
		found = true
		s, ok := c.served[api]
		if !ok {
			errs = append(errs, fmt.Errorf("%s: Strimzi %s does not serve %s (served: %s)", r.where, c.release, api, strings.Join(sortedKeys(c.served), ", ")))
			continue
		}
		var inst any
		b, _ := yaml.Marshal(r.doc)
		if err := yaml.Unmarshal(b, &inst); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := s.Validate(jsonValue(inst)); err != nil {
			errs = append(errs, fmt.Errorf("%s: Strimzi %s %s: %v", r.where, c.release, api, err))
		}
	}
	if !found {
		errs = append(errs, fmt.Errorf("%s: no CRD of kind %q under testdata/strimzi", r.where, kind))
	}
	return errs
}

// TestStrimziResources: every KafkaTopic and KafkaUser under deploy/k8s applies on each
// Strimzi release of testdata/strimzi (0.49 and 1.2): its apiVersion is served, and its
// fields are the schema's, with no unknown one.
func TestStrimziResources(t *testing.T) {
	crds := loadCRDs(t)
	res := strimziResources(t)
	kinds := map[string]int{}
	for _, r := range res {
		kinds[r.doc["kind"].(string)]++
		for _, err := range validate(r, crds) {
			t.Error(err)
		}
	}
	if kinds["KafkaTopic"] == 0 || kinds["KafkaUser"] == 0 {
		t.Fatalf("found %v under k8s/: want KafkaTopic and KafkaUser resources", kinds)
	}
	t.Logf("validated %d resources (%v) against %d CRDs", len(res), kinds, len(crds))
}

// TestStrimziValidationRefuses: the check fails on what a cluster would refuse, so that
// a pass above means something.
func TestStrimziValidationRefuses(t *testing.T) {
	crds := loadCRDs(t)
	var topic, user resource
	for _, r := range strimziResources(t) {
		switch r.doc["kind"] {
		case "KafkaTopic":
			topic = r
		case "KafkaUser":
			user = r
		}
	}
	for _, tc := range []struct {
		name   string
		r      resource
		mutate func(map[string]any)
		want   string
	}{
		{"removed API version", topic, func(d map[string]any) { d["apiVersion"] = "kafka.strimzi.io/v1beta2" }, "does not serve kafka.strimzi.io/v1beta2"},
		{"unknown spec field", topic, func(d map[string]any) { d["spec"].(map[string]any)["partition"] = 6 }, "partition"},
		{"wrong type", topic, func(d map[string]any) { d["spec"].(map[string]any)["replicas"] = "three" }, "replicas"},
		{"below minimum", topic, func(d map[string]any) { d["spec"].(map[string]any)["partitions"] = 0 }, "partitions"},
		{"unknown enum value", user, func(d map[string]any) {
			d["spec"].(map[string]any)["authentication"].(map[string]any)["type"] = "kerberos"
		}, "authentication"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := resource{where: tc.r.where, doc: deepCopy(t, tc.r.doc)}
			tc.mutate(r.doc)
			errs := validate(r, crds)
			if len(errs) == 0 {
				t.Fatalf("%s: accepted", tc.name)
			}
			if msg := errors.Join(errs...).Error(); !strings.Contains(msg, tc.want) {
				t.Fatalf("%s: errors do not name %q:\n%s", tc.name, tc.want, msg)
			}
		})
	}
}

// remarshal moves v into out through YAML.
func remarshal(t *testing.T, v, out any) {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
}

func deepCopy(t *testing.T, v map[string]any) map[string]any {
	t.Helper()
	var out map[string]any
	remarshal(t, v, &out)
	return out
}

// jsonValue converts YAML's decoded values to those of encoding/json, which jsonschema
// validates: integers become float64.
func jsonValue(v any) any {
	switch n := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, c := range n {
			out[k] = jsonValue(c)
		}
		return out
	case []any:
		out := make([]any, len(n))
		for i, c := range n {
			out[i] = jsonValue(c)
		}
		return out
	case int:
		return float64(n)
	}
	return v
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
