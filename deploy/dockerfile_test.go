package deploy

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestServiceDockerfilesBuild runs the build stage of each service's multi-stage
// Dockerfile as Docker would, without Docker (its golang base image cannot be pulled
// everywhere): each COPY into a directory of its own, each RUN there with the stage's
// ENV and WORKDIR. So a module the service's go.mod names but the Dockerfile does not
// copy fails here, in the layer that needs it.
func TestServiceDockerfilesBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles each service: not in -short mode")
	}
	for _, svc := range []string{"ingestion", "processing"} {
		t.Run(svc, func(t *testing.T) {
			runBuildStage(t, filepath.Join("..", "services", svc, "Dockerfile"))
		})
	}
}

func runBuildStage(t *testing.T, dockerfile string) {
	f, err := os.Open(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	root := t.TempDir()
	env := append(os.Environ(), "GOWORK=off")
	workdir := root
	stage := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		instr, args, _ := strings.Cut(line, " ")
		switch strings.ToUpper(instr) {
		case "FROM":
			if stage++; stage > 1 {
				return // the runtime stage only copies the binary
			}
		case "ENV":
			env = append(env, strings.Fields(args)...)
		case "WORKDIR":
			workdir = filepath.Join(root, args)
			if err := os.MkdirAll(workdir, 0o755); err != nil {
				t.Fatal(err)
			}
		case "COPY":
			parts := strings.Fields(args)
			dst := filepath.Join(root, parts[len(parts)-1])
			for _, src := range parts[:len(parts)-1] {
				if err := exec.Command("mkdir", "-p", dst).Run(); err != nil {
					t.Fatal(err)
				}
				// cp -r SRC/. DST copies a directory's contents, as COPY does.
				from := filepath.Join("..", src)
				if st, err := os.Stat(from); err == nil && st.IsDir() {
					from += "/."
				}
				if out, err := exec.Command("cp", "-r", from, dst).CombinedOutput(); err != nil {
					t.Fatalf("%s: COPY %s: %v\n%s", dockerfile, src, err, out)
				}
			}
		case "RUN":
			cmd := exec.Command("sh", "-c", strings.ReplaceAll(args, " /out/", " "+root+"/out/"))
			cmd.Dir, cmd.Env = workdir, env
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: RUN %s: %v\n%s", dockerfile, args, err, out)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(root, "out", "app")); err != nil {
		t.Fatalf("%s: the build stage made no /out/app: %v", dockerfile, err)
	}
}
