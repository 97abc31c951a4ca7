package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

// TestCompose brings up the repository's docker-compose.yml as a user would, with
// docker-compose, and checks it from the host: every service becomes healthy, a throttle
// set through the admin API is enforced with 429 by both ingestion replicas. Only the
// images that cannot be pulled here are swapped (compose.override.yml); the services'
// images are the ones the suite built, tagged as the compose file names them (their
// Dockerfiles build FROM golang, which cannot be pulled either), so it runs --no-build.
func TestCompose(t *testing.T) {
	requireDocker(t)
	composeCmd, err := findCompose()
	if err != nil {
		if os.Getenv("E2E_REQUIRE_DOCKER") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	// The compose file publishes fixed ports on loopback.
	for _, port := range []int{9092, 8081, 8090, 8080, 8082} {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatalf("docker-compose.yml publishes 127.0.0.1:%d, which is taken (make run?): %v", port, err)
		}
		ln.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	img, err := buildImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if img.fakeKafka {
		t.Fatalf("the compose file runs real Kafka: E2E_KAFKA_IMAGE=fake does not fit it")
	}
	cli, err := docker(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tag := "e2e-" + strconv.Itoa(os.Getpid())
	for _, im := range []struct{ src, repo string }{{img.processing, "sluice-processing"}, {img.ingestion, "sluice-ingestion"}} {
		ref := im.repo + ":" + tag
		if _, err := cli.ImageTag(ctx, client.ImageTagOptions{Source: im.src, Target: ref}); err != nil {
			t.Fatalf("tag %s as %s: %v", im.src, ref, err)
		}
		t.Cleanup(func() {
			_, _ = cli.ImageRemove(context.Background(), ref, client.ImageRemoveOptions{})
		})
	}

	project := "sluice-e2e-compose-" + strconv.Itoa(os.Getpid())
	token := "e2e-compose-token"
	compose := func(ctx context.Context, args ...string) (string, error) {
		full := append(append([]string(nil), composeCmd[1:]...), "-p", project,
			"-f", filepath.Join(repoRoot, "docker-compose.yml"), "-f", "compose.override.yml")
		cmd := exec.CommandContext(ctx, composeCmd[0], append(full, args...)...)
		cmd.Env = append(os.Environ(), "SLUICE_IMAGE_TAG="+tag, "SLUICE_E2E_KAFKA_IMAGE="+img.kafka,
			"SLUICE_E2E_REGISTRY_IMAGE="+img.registry, "ADMIN_TOKEN="+token)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if err != nil {
			err = fmt.Errorf("%s %s: %w\n%s", composeCmd[0], strings.Join(args, " "), err, out.String())
		}
		return out.String(), err
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if logs, err := compose(ctx, "logs", "--no-color"); err == nil {
			dir := filepath.Join(".build", "logs", "compose")
			_ = os.MkdirAll(dir, 0o755)
			_ = os.WriteFile(filepath.Join(dir, "compose.log"), []byte(logs), 0o644)
			if t.Failed() {
				t.Logf("compose logs saved in e2e/%s/compose.log", dir)
			}
		}
		// The project's own containers, network and volumes, by project name.
		if out, err := compose(ctx, "down", "-v", "--remove-orphans", "--timeout", "10"); err != nil {
			t.Errorf("tear down: %v\n%s", err, out)
		}
	})

	start := time.Now()
	if _, err := compose(ctx, "up", "-d", "--no-build"); err != nil {
		t.Fatal(err)
	}
	report(t, "docker-compose up -d returned after %s", since(start))

	// Health as the engine sees it, from each service's own health check.
	for _, svc := range []string{"kafka", "schema-registry", "processing", "ingestion-1", "ingestion-2"} {
		eventually(t, 4*time.Minute, 500*time.Millisecond, svc+" healthy", func(ctx context.Context) (bool, string) {
			id, err := compose(ctx, "ps", "-q", svc)
			if err != nil || strings.TrimSpace(id) == "" {
				return false, fmt.Sprintf("no container yet (%v)", err)
			}
			st, err := cli.ContainerInspect(ctx, strings.TrimSpace(id), client.ContainerInspectOptions{})
			if err != nil {
				return false, err.Error()
			}
			if st.Container.State.Health == nil {
				return false, "no health check"
			}
			return st.Container.State.Health.Status == "healthy", fmt.Sprintf("state %s, health %s", st.Container.State.Status, st.Container.State.Health.Status)
		})
	}
	report(t, "every service healthy %s after up", since(start))
	id, err := compose(ctx, "ps", "-q", "kafka-topics")
	if err != nil {
		t.Fatal(err)
	}
	st, err := cli.ContainerInspect(ctx, strings.TrimSpace(id), client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Container.State.Status != "exited" || st.Container.State.ExitCode != 0 {
		t.Fatalf("kafka-topics: state %s, exit code %d, want exited 0", st.Container.State.Status, st.Container.State.ExitCode)
	}

	// A throttle through processing's admin API, published on the host as the compose
	// file says; both replicas refuse the customer's excess events.
	customer := uniq("compose")
	var th adminThrottle
	eventually(t, time.Minute, 200*time.Millisecond, "set a throttle", func(ctx context.Context) (bool, string) {
		status, _, err := do(ctx, http.MethodPost, "http://127.0.0.1:8090/v1/throttles", token,
			setRequest{Customer: customer, Limit: 2, Window: "1h", Duration: "10m", Reason: "e2e: compose"}, &th)
		return status == http.StatusCreated, fmt.Sprintf("status %d, %v", status, err)
	})
	set := time.Now()
	for _, base := range []string{"http://127.0.0.1:8080", "http://127.0.0.1:8082"} {
		eventually(t, 30*time.Second, 20*time.Millisecond, base+" shows the throttle", func(ctx context.Context) (bool, string) {
			got, found, err := replicaThrottle(ctx, base, customer)
			return found && got.ID == th.ID, fmt.Sprintf("found %v, id %q, %v", found, got.ID, err)
		})
		visible := since(set)
		accepted, status := 0, 0
		for range 10 {
			if status = postEvent(ctx, base, customer); status != http.StatusAccepted {
				break
			}
			accepted++
		}
		// Two an hour, shared by two replicas: never more than two here.
		if status != http.StatusTooManyRequests || accepted > 2 {
			t.Errorf("%s: %d events accepted, then status %d; want at most 2, then 429", base, accepted, status)
		}
		report(t, "%s shows the throttle %s after it was set, then answers 429 after %d accepted", base, visible, accepted)
	}
}

// findCompose returns the compose command: docker-compose, else the docker compose
// plugin.
func findCompose() ([]string, error) {
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}, nil
	}
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}, nil
	}
	return nil, fmt.Errorf("neither docker-compose nor the docker compose plugin is installed (apt-get install docker-compose)")
}
