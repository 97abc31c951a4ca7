package deploycheck

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"gopkg.in/yaml.v3"
)

// Root is the repository root. It must be called from a test of services/<name>, whose
// working directory is two levels below the root; it fails the test otherwise.
func Root(t testing.TB) string {
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

// YAMLDocs decodes every document of a YAML file (merge keys and anchors resolved).
func YAMLDocs(t testing.TB, path string) []map[string]any {
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

// atMap is at's value when it is a map, or nil.
func atMap(v any, keys ...string) map[string]any {
	m, _ := at(v, keys...).(map[string]any)
	return m
}

// AtList walks maps by key, as at does, and returns the list found there, or nil when
// a key is missing or the value is not a list.
func AtList(v any, keys ...string) []any {
	l, _ := at(v, keys...).([]any)
	return l
}

// AtString walks maps by key and returns the value found there as a string (numbers and
// booleans formatted), or "" when a key is missing.
func AtString(v any, keys ...string) string {
	switch s := at(v, keys...).(type) {
	case nil:
		return ""
	case string:
		return s
	default:
		return fmt.Sprint(s)
	}
}
