package deploycheck

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// dockerInstruction is one instruction of a Dockerfile, continuation lines joined.
type dockerInstruction struct {
	Cmd  string // upper case: FROM, RUN, ...
	Args string
}

// dockerStages parses a Dockerfile into its stages; instructions before the first FROM
// (global ARGs) are stage 0.
func dockerStages(t testing.TB, path string) [][]dockerInstruction {
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

// CheckDockerfile checks a service's multi-stage Dockerfile, which cannot be built where
// no base image can be pulled: a Go build stage that builds the service statically with
// -trimpath from files that exist, and a final stage from scratch or distroless that runs
// it as a numeric non-root user, exposes its port and probes it with its healthcheck
// mode. And the prebuilt image's Dockerfile probes the same way.
func CheckDockerfile(t testing.TB, root, dockerfile, service string, port int) {
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
func checkHealthcheck(t testing.TB, where, args, binary string) {
	t.Helper()
	_, cmd, ok := strings.Cut(args, "CMD ")
	if got := execForm(cmd); !ok || !slices.Equal(got, []string{binary, "healthcheck"}) {
		t.Errorf("%s: HEALTHCHECK %q: want CMD [%q, \"healthcheck\"] (exec form: no shell in the image)", where, args, binary)
	}
}
