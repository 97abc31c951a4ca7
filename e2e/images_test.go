package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"

	"github.com/sluice-dev/sluice/pkg/throttle/throttletest/kafkacluster"
	tclog "github.com/testcontainers/testcontainers-go/log"
)

// Labels on everything the suite creates, so that a run can remove what an interrupted
// run on the same host left behind (Ryuk is off).
const (
	labelSuite = "dev.sluice.e2e"
	labelOwner = "dev.sluice.e2e.owner" // host name and process id of the test binary
)

// Default images of the real broker and registry, used when they can be pulled.
const (
	defaultKafkaImage    = "apache/kafka:4.4.0"
	defaultRegistryImage = "confluentinc/cp-schema-registry:7.9.0"
	// fakeImage, as E2E_KAFKA_IMAGE or E2E_REGISTRY_IMAGE, asks for the fake
	// broker or registry (deploy/local) without trying to pull anything.
	fakeImage = "fake"
)

// repoRoot is the repository, seen from this package's directory (go test runs there).
const repoRoot = ".."

func owner() string {
	host, _ := os.Hostname()
	return host + ":" + strconv.Itoa(os.Getpid())
}

func suiteLabels() map[string]string {
	return map[string]string{labelSuite: "1", labelOwner: owner()}
}

// logger is testcontainers' logger: quiet unless E2E_VERBOSE is set, since its lines
// would drown the scenarios' own.
func logger() tclog.Logger {
	if os.Getenv("E2E_VERBOSE") != "" {
		return tclog.Default()
	}
	return tclog.NewNoopLogger()
}

var dockerClient struct {
	once sync.Once
	c    *testcontainers.DockerClient
	err  error
}

func docker(ctx context.Context) (*testcontainers.DockerClient, error) {
	dockerClient.once.Do(func() {
		dockerClient.c, dockerClient.err = testcontainers.NewDockerClientWithOpts(ctx)
	})
	return dockerClient.c, dockerClient.err
}

// checkDocker reports whether a Docker engine answers, and removes what interrupted
// runs left.
func checkDocker(ctx context.Context) (err error) {
	defer func() {
		// testcontainers panics on some broken environments rather than failing.
		if r := recover(); r != nil {
			err = fmt.Errorf("docker client: %v", r)
		}
	}()
	cli, err := docker(ctx)
	if err != nil {
		return fmt.Errorf("find a Docker engine (DOCKER_HOST, the default socket, rootless Docker): %w", err)
	}
	if _, err := cli.Ping(ctx, client.PingOptions{}); err != nil {
		return fmt.Errorf("ping the docker engine: %w", err)
	}
	if _, set := os.LookupEnv("TESTCONTAINERS_HOST_OVERRIDE"); !set && engineIsLocal(ctx, cli) {
		// Inside a container, testcontainers reaches published ports through the default
		// gateway, assuming the engine runs on the host outside. When the engine shares
		// this network namespace (its bridge's address is one of ours), they are on
		// loopback instead, and the gateway is some other machine.
		os.Setenv("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")
	}
	reapStale(ctx, cli)
	return nil
}

// engineIsLocal reports whether the Docker engine runs in this network namespace: the
// gateway of its default bridge network (docker0) is an address of this host.
func engineIsLocal(ctx context.Context, cli *testcontainers.DockerClient) bool {
	nw, err := cli.NetworkInspect(ctx, "bridge", client.NetworkInspectOptions{})
	if err != nil {
		return false
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, cfg := range nw.Network.IPAM.Config {
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			// Older engines leave the gateway out; the bridge's address is then ours if
			// one of our addresses is in its subnet.
			if (cfg.Gateway.IsValid() && ip == cfg.Gateway) || (!cfg.Gateway.IsValid() && cfg.Subnet.IsValid() && cfg.Subnet.Contains(ip)) {
				return true
			}
		}
	}
	return false
}

// reapStale removes the containers and networks of earlier runs on this host whose test
// process is gone (killed by a timeout, interrupted), since nothing else would.
func reapStale(ctx context.Context, cli *testcontainers.DockerClient) {
	host, _ := os.Hostname()
	stale := func(labels map[string]string) bool {
		h, pid, ok := strings.Cut(labels[labelOwner], ":")
		if !ok || h != host {
			return false
		}
		n, err := strconv.Atoi(pid)
		if err != nil || n == os.Getpid() {
			return false
		}
		return errors.Is(syscall.Kill(n, 0), syscall.ESRCH)
	}
	f := client.Filters{}.Add("label", labelSuite)
	if cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f}); err == nil {
		for _, c := range cs.Items {
			if stale(c.Labels) {
				_, _ = cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
			}
		}
	}
	if ns, err := cli.NetworkList(ctx, client.NetworkListOptions{Filters: f}); err == nil {
		for _, n := range ns.Items {
			if stale(n.Labels) {
				_, _ = cli.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{})
			}
		}
	}
	if is, err := cli.ImageList(ctx, client.ImageListOptions{Filters: f}); err == nil {
		for _, i := range is.Items {
			if stale(i.Labels) {
				_, _ = cli.ImageRemove(ctx, i.ID, client.ImageRemoveOptions{Force: true, PruneChildren: true})
			}
		}
	}
}

// images are the images a stack runs.
type images struct {
	ingestion, processing, probe, throttlectl string
	// infra is deploy/local's image (kfake and srfake), built whatever the broker and
	// registry images are: it is small and cheap.
	infra string
	// kafka and registry are the broker's and the registry's images; fakeKafka and
	// fakeRegistry say whether they are deploy/local's.
	kafka, registry         string
	fakeKafka, fakeRegistry bool
}

var built struct {
	once sync.Once
	img  images
	err  error
	tags []string // to remove at the end
}

// buildImages builds the static binaries and the images once per run.
func buildImages(ctx context.Context) (images, error) {
	built.once.Do(func() {
		start := time.Now()
		built.img, built.err = buildAll(ctx)
		if built.err == nil {
			record("images", "binaries and images built in %s; broker %s, registry %s", since(start), built.img.kafka, built.img.registry)
		}
	})
	return built.img, built.err
}

func buildAll(ctx context.Context) (images, error) {
	var img images
	bin := filepath.Join(repoRoot, "deploy", "docker", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return img, err
	}
	// The binaries the images are made of, built the way Dockerfile.prebuilt says: static,
	// outside Docker (no image can be pulled to build in).
	for _, b := range []struct{ name, dir string }{
		{"ingestion", "services/ingestion"},
		{"processing", "services/processing"},
		{"local", "deploy/local"},
		{"probe", "e2e/cmd/probe"},
		{"kafkatools", "e2e/cmd/kafkatools"},
		{"throttlectl", "services/throttlectl"},
	} {
		out, err := filepath.Abs(filepath.Join(bin, b.name))
		if err != nil {
			return img, err
		}
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
		cmd.Dir = filepath.Join(repoRoot, b.dir)
		// GOFLAGS from the test's environment (-race, say) must not reach a static build.
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
		if msg, err := cmd.CombinedOutput(); err != nil {
			return img, fmt.Errorf("go build %s: %w\n%s", b.dir, err, msg)
		}
	}

	p, err := testcontainers.NewDockerProvider(testcontainers.WithLogger(logger()))
	if err != nil {
		return img, err
	}
	defer p.Close()
	prebuilt := filepath.Join(repoRoot, "deploy", "docker", "Dockerfile.prebuilt")
	for _, b := range []struct {
		dst        *string
		dockerfile string
		binary     string
	}{
		{&img.ingestion, prebuilt, "ingestion"},
		{&img.processing, prebuilt, "processing"},
		{&img.probe, prebuilt, "probe"},
		{&img.throttlectl, prebuilt, "throttlectl"},
		{&img.infra, filepath.Join(repoRoot, "deploy", "local", "Dockerfile"), "local"},
	} {
		tag, err := buildImage(ctx, p, b.dockerfile, bin, b.binary)
		if err != nil {
			return img, err
		}
		*b.dst = tag
		built.tags = append(built.tags, tag)
	}

	var pulled bool
	img.kafka, pulled, img.fakeKafka = chooseImage(ctx, p, "E2E_KAFKA_IMAGE", defaultKafkaImage, img.infra)
	if !pulled && !img.fakeKafka && os.Getenv("E2E_KAFKA_IMAGE") == "" {
		// No registry: real Kafka all the same, in an image built here.
		if img.kafka, err = buildKafkaImage(ctx, filepath.Join(bin, "kafkatools")); err != nil {
			return img, err
		}
	}
	var regPulled bool
	img.registry, regPulled, img.fakeRegistry = chooseImage(ctx, p, "E2E_REGISTRY_IMAGE", defaultRegistryImage, img.infra)
	if !regPulled && !img.fakeRegistry && os.Getenv("E2E_REGISTRY_IMAGE") == "" {
		// Without Confluent's image, the registry is deploy/local's (schemas kept in the
		// broker's _schemas topic, compatibility checked): the one that can be had here.
		img.registry, img.fakeRegistry = img.infra, true
	}
	return img, nil
}

// buildKafkaImage builds deploy/kafka/image (a Debian base made with debootstrap, plus
// Kafka's jars) with its script, which reuses an image whose inputs are unchanged, and
// returns its tag. The jars are found as the real-Kafka tests find them: SLUICE_KAFKA_LIBS,
// else make kafka's copy.
func buildKafkaImage(ctx context.Context, tools string) (string, error) {
	jars, err := kafkacluster.FindLibs()
	if err != nil {
		return "", fmt.Errorf("%s cannot be pulled, and the Kafka image built here needs Kafka's jars: %w (KAFKA_JARS=<a folder of Kafka's jars> where Maven cannot reach its repository), or set E2E_KAFKA_IMAGE", defaultKafkaImage, err)
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, filepath.Join(repoRoot, "deploy", "kafka", "image", "build.sh"), jars, tools)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("build the Kafka image: %w\n%s", err, stderr.String())
	}
	tag := strings.TrimSpace(string(out))
	record("images", "%s ready in %s (%s)", tag, since(start), strings.TrimSpace(lastLine(stderr.String())))
	return tag, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// buildImage builds dockerfile with binary as the BINARY build argument, from a context
// holding only the Dockerfile and bin/<binary>: what `docker build -f <dockerfile>
// deploy/docker` sends, minus the other binaries.
func buildImage(ctx context.Context, p *testcontainers.DockerProvider, dockerfile, bin, binary string) (string, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name, path string, mode int64) error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(b)), ModTime: time.Now()}); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	}
	if err := add("Dockerfile", dockerfile, 0o644); err != nil {
		return "", fmt.Errorf("build context for %s: %w", binary, err)
	}
	if err := add("bin/"+binary, filepath.Join(bin, binary), 0o755); err != nil {
		return "", fmt.Errorf("build context for %s: %w", binary, err)
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	arg := binary
	req := &testcontainers.ContainerRequest{FromDockerfile: testcontainers.FromDockerfile{
		ContextArchive: bytes.NewReader(buf.Bytes()),
		Dockerfile:     "Dockerfile",
		Repo:           "sluice-e2e-" + binary,
		Tag:            strconv.Itoa(os.Getpid()),
		BuildArgs:      map[string]*string{"BINARY": &arg},
		KeepImage:      true,
		BuildOptionsModifier: func(o *client.ImageBuildOptions) {
			o.Labels = suiteLabels()
		},
	}}
	tag, err := p.BuildImage(ctx, req)
	if err != nil {
		return "", fmt.Errorf("build image %s from %s: %w", binary, dockerfile, err)
	}
	return tag, nil
}

// chooseImage picks the broker's or the registry's image: the one named by env, the
// fake one for "fake", else def when it is present or can be pulled (pulled true). When
// def cannot be had it returns def, false, false and the caller decides.
func chooseImage(ctx context.Context, p *testcontainers.DockerProvider, env, def, fake string) (image string, pulled, isFake bool) {
	switch v := os.Getenv(env); v {
	case fakeImage:
		return fake, false, true
	case "":
	default:
		return v, false, false
	}
	cli := p.Client()
	if _, err := cli.ImageInspect(ctx, def); err == nil {
		return def, true, false
	}
	pctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	resp, err := cli.ImagePull(pctx, def, client.ImagePullOptions{})
	if err == nil {
		_, _ = io.Copy(io.Discard, resp)
		err = resp.Close()
		if _, ierr := cli.ImageInspect(ctx, def); ierr != nil && err == nil {
			err = ierr
		}
	}
	if err != nil {
		record("images", "%s cannot be pulled (%v)", def, firstLine(err))
		return def, false, false
	}
	return def, true, false
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

func removeImages(ctx context.Context) {
	cli, err := docker(ctx)
	if err != nil {
		return
	}
	for _, tag := range built.tags {
		_, _ = cli.ImageRemove(ctx, tag, client.ImageRemoveOptions{Force: true, PruneChildren: true})
	}
}
