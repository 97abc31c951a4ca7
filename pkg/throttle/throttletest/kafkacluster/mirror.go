package kafkacluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// MirrorMaker is a MirrorMaker 2 process in dedicated mode
// (org.apache.kafka.connect.mirror.MirrorMaker), for tests of a second region. Its
// methods are safe for concurrent use.
type MirrorMaker struct {
	java string
	libs string
	heap int
	p    *node // the process: its dir holds mm2.properties and server.log
}

// MirrorConfig starts a MirrorMaker.
type MirrorConfig struct {
	// Libs is the directory of MirrorMaker 2's jars (default: FindMirrorLibs).
	Libs string
	// Properties is the text of its mm2.properties.
	Properties string
	// HeapMB is its JVM's maximum heap (default 256).
	HeapMB int
}

// StartMirrorMaker writes the properties and starts the process. It does not wait for
// it to copy anything: a test waits for what it expects on the target cluster.
func StartMirrorMaker(cfg MirrorConfig) (*MirrorMaker, error) {
	if cfg.Libs == "" {
		libs, err := FindMirrorLibs()
		if err != nil {
			return nil, err
		}
		cfg.Libs = libs
	}
	if cfg.HeapMB <= 0 {
		cfg.HeapMB = 256
	}
	java, err := findJava()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-mm2-", tempPrefix, os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("mirrormaker dir: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "mm2.properties"), []byte(cfg.Properties), 0o644); err != nil {
		return nil, fmt.Errorf("mirrormaker properties: %w", err)
	}
	m := &MirrorMaker{java: java, libs: cfg.Libs, heap: cfg.HeapMB, p: &node{dir: dir}}
	if err := m.Start(); err != nil {
		_ = m.Close()
		return nil, err
	}
	return m, nil
}

// Start starts the process again (it resumes from the offsets it committed on the
// target cluster). Starting a running one does nothing.
func (m *MirrorMaker) Start() error {
	level := os.Getenv("SLUICE_KAFKA_LOG_LEVEL")
	if level == "" {
		level = "warn"
	}
	args := []string{
		"-Xms64m", "-Xmx" + strconv.Itoa(m.heap) + "m",
		"-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData",
		"-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
		"-Dorg.slf4j.simpleLogger.defaultLogLevel=" + level,
		"-Dorg.slf4j.simpleLogger.showDateTime=true",
		"-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
		"-cp", filepath.Join(m.libs, "*"),
		"org.apache.kafka.connect.mirror.MirrorMaker", filepath.Join(m.p.dir, "mm2.properties"),
	}
	return spawnJVM(m.p, "mirrormaker", m.java, args)
}

// Kill ends the process with SIGKILL, as a crash would, and waits for it to end.
func (m *MirrorMaker) Kill() { m.p.kill() }

// Stop ends the process with SIGTERM and waits; when ctx ends first, it is killed.
func (m *MirrorMaker) Stop(ctx context.Context) error {
	if !m.p.running() {
		return nil
	}
	m.p.signal(syscall.SIGTERM)
	select {
	case <-m.p.wait():
		return nil
	case <-ctx.Done():
		m.p.kill()
		return fmt.Errorf("stop mirrormaker: killed after %w", ctx.Err())
	}
}

// Running reports whether the process runs.
func (m *MirrorMaker) Running() bool { return m.p.running() }

// LogFile is where the process writes its log.
func (m *MirrorMaker) LogFile() string { return filepath.Join(m.p.dir, "server.log") }

// Close kills the process and removes its directory.
func (m *MirrorMaker) Close() error {
	m.p.kill()
	return os.RemoveAll(m.p.dir)
}

// FindMirrorLibs finds MirrorMaker 2's jars: $SLUICE_MM2_LIBS, else
// .kafka/mirrormaker-<version>/libs in the working directory or the nearest parent that
// has one (the layout `make mirrormaker` fills).
func FindMirrorLibs() (string, error) {
	if libs := os.Getenv("SLUICE_MM2_LIBS"); libs != "" {
		return libs, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find mirrormaker jars: %w", err)
	}
	for {
		found, _ := filepath.Glob(filepath.Join(dir, ".kafka", "mirrormaker-*", "libs", "connect-mirror-*.jar"))
		for _, jar := range found {
			if !strings.Contains(filepath.Base(jar), "client") {
				return filepath.Dir(jar), nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("find mirrormaker jars: no .kafka/mirrormaker-*/libs here or above (run make mirrormaker, or set SLUICE_MM2_LIBS)")
		}
		dir = parent
	}
}
