package deploycheck

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// ComposeService is a service of docker-compose.yml.
type ComposeService struct {
	Name string
	Env  map[string]string
	Def  map[string]any
}

// ComposeServices returns the services of docker-compose.yml built from dockerfile (a
// path from the repository root).
func ComposeServices(t testing.TB, root, dockerfile string) []ComposeService {
	t.Helper()
	docs := YAMLDocs(t, filepath.Join(root, "docker-compose.yml"))
	if len(docs) != 1 {
		t.Fatalf("docker-compose.yml: got %d documents, want 1", len(docs))
	}
	var out []ComposeService
	for name, def := range atMap(docs[0], "services") {
		if filepath.Clean(AtString(def, "build", "dockerfile")) != filepath.Clean(dockerfile) {
			continue
		}
		s := ComposeService{Name: name, Env: map[string]string{}, Def: def.(map[string]any)}
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
	slices.SortFunc(out, func(a, b ComposeService) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// ComposeTopics reads the `kafka-topics.sh --create` commands in docker-compose.yml's
// service commands: topic name to spec.
func ComposeTopics(t testing.TB, root string) map[string]Topic {
	t.Helper()
	docs := YAMLDocs(t, filepath.Join(root, "docker-compose.yml"))
	out := map[string]Topic{}
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
			spec := Topic{Where: "docker-compose.yml service " + name, Configs: map[string]string{}}
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
