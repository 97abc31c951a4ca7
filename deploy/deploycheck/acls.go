package deploycheck

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"gopkg.in/yaml.v3"
)

// ACLFile is where the programs' least-privilege ACLs are written down, from the root.
const ACLFile = "deploy/acls/acls.yaml"

// Principal is one program's user and what it may do.
type Principal struct {
	Program string    `yaml:"program"`
	User    string    `yaml:"user"`
	ACLs    []ACLRule `yaml:"acls"`
}

// ACLRule allows operations on one resource.
type ACLRule struct {
	Resource   string   `yaml:"resource"` // topic, group, cluster
	Name       string   `yaml:"name"`
	Pattern    string   `yaml:"pattern"` // literal (when empty) or prefixed
	Operations []string `yaml:"operations"`
}

// ACLs reads deploy/acls/acls.yaml under root, keyed by program.
func ACLs(t testing.TB, root string) map[string]Principal {
	t.Helper()
	path := filepath.Join(root, ACLFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Principals []Principal `yaml:"principals"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true) // a misspelt key would silently grant nothing
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	out := map[string]Principal{}
	for _, p := range f.Principals {
		if p.Program == "" || p.User == "" || len(p.ACLs) == 0 {
			t.Fatalf("%s: principal %+v: want program, user and acls", path, p)
		}
		for i, r := range p.ACLs {
			if r.Pattern == "" {
				p.ACLs[i].Pattern = "literal"
			}
			if r.Resource == "" || r.Name == "" || len(r.Operations) == 0 || !slices.Contains([]string{"", "literal", "prefixed"}, r.Pattern) {
				t.Fatalf("%s: %s: acl %+v: want resource, name, operations and pattern literal or prefixed", path, p.Program, r)
			}
		}
		if _, dup := out[p.Program]; dup {
			t.Fatalf("%s: program %s twice", path, p.Program)
		}
		out[p.Program] = p
	}
	return out
}

// StrimziUsers reads the KafkaUser resources under deploy/k8s: user name to its ACLs, in
// the form of ACLFile (Strimzi's patternType "prefix" read as "prefixed").
func StrimziUsers(t testing.TB, root string) map[string][]ACLRule {
	t.Helper()
	out := map[string][]ACLRule{}
	for _, d := range K8sDocs(t, root) {
		if AtString(d.Doc, "kind") != "KafkaUser" {
			continue
		}
		name := AtString(d.Doc, "metadata", "name")
		where := fmt.Sprintf("%s: KafkaUser %s", d.Path, name)
		if got := AtString(d.Doc, "apiVersion"); got != "kafka.strimzi.io/v1" {
			t.Errorf("%s: got apiVersion %q, want kafka.strimzi.io/v1", where, got)
		}
		if AtString(d.Doc, "metadata", "labels", "strimzi.io/cluster") == "" {
			t.Errorf("%s: no strimzi.io/cluster label: no User Operator will act on it", where)
		}
		if got := AtString(d.Doc, "spec", "authentication", "type"); got != "scram-sha-512" {
			t.Errorf("%s: got authentication %q, want scram-sha-512", where, got)
		}
		if got := AtString(d.Doc, "spec", "authorization", "type"); got != "simple" {
			t.Errorf("%s: got authorization %q, want simple", where, got)
		}
		var rules []ACLRule
		for _, a := range AtList(d.Doc, "spec", "authorization", "acls") {
			r := ACLRule{
				Resource: AtString(a, "resource", "type"),
				Name:     AtString(a, "resource", "name"),
				Pattern:  AtString(a, "resource", "patternType"),
			}
			switch r.Pattern {
			case "", "literal":
				r.Pattern = "literal"
			case "prefix":
				r.Pattern = "prefixed"
			}
			if typ := AtString(a, "type"); typ != "" && typ != "allow" {
				t.Errorf("%s: acl on %s %s: got type %q, want allow", where, r.Resource, r.Name, typ)
			}
			for _, op := range AtList(a, "operations") {
				r.Operations = append(r.Operations, fmt.Sprint(op))
			}
			rules = append(rules, r)
		}
		out[name] = rules
	}
	return out
}
