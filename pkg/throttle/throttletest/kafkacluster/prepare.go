package kafkacluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// What a cluster start costs is mostly the JVMs loading Kafka's classes: three of them on
// two cores. Two things made once per Kafka installation, and kept beside its jars, take
// part of it away from every later start: a formatted storage to copy, and a class-data
// sharing archive of the classes a node loads while it starts.

// format prepares every node's storage. The storage tool is a JVM start of its own
// (over a second here), so it formats one template per Kafka installation, and each
// node gets a copy with its own meta.properties: the bootstrap metadata it writes does
// not depend on the node.
func (c *Cluster) format(ctx context.Context) error {
	tmpl, err := c.template(ctx)
	if err != nil {
		return err
	}
	for _, n := range c.nodes {
		data := filepath.Join(n.dir, "data")
		if err := os.CopyFS(data, os.DirFS(tmpl)); err != nil {
			return fmt.Errorf("copy formatted storage to node %d: %w", n.id, err)
		}
		meta := fmt.Sprintf("version=1\nnode.id=%d\ncluster.id=%s\ndirectory.id=%s\n", n.id, c.clusterID, newUUID())
		if err := os.WriteFile(filepath.Join(data, "meta.properties"), []byte(meta), 0o644); err != nil {
			return fmt.Errorf("write meta.properties of node %d: %w", n.id, err)
		}
	}
	return nil
}

// templateName changes whenever what format writes could change (the quorum's shape).
const templateName = "storage-template-v1"

func (c *Cluster) template(ctx context.Context) (string, error) {
	final := filepath.Join(filepath.Dir(c.cfg.Libs), templateName)
	// A secured cluster's bootstrap metadata holds its SCRAM users: its template is its
	// own, never shared.
	if c.cfg.Security == nil {
		if _, err := os.Stat(filepath.Join(final, "meta.properties")); err == nil {
			return final, nil
		}
	}
	work, err := os.MkdirTemp(c.dir, "format-")
	if err != nil {
		return "", fmt.Errorf("format dir: %w", err)
	}
	first := c.nodes[0]
	n := &node{id: first.id, brokerPort: first.brokerPort, controllerPort: first.controllerPort, internalPort: first.internalPort, dir: work}
	data, err := c.formatNode(ctx, n, c.properties(n))
	if err != nil || c.cfg.Security != nil {
		return data, err
	}
	return renameIntoPlace(data, final), nil
}

// formatNode writes props as n's server.properties and formats its data directory.
func (c *Cluster) formatNode(ctx context.Context, n *node, props string) (string, error) {
	if err := os.WriteFile(n.propsFile(), []byte(props), 0o644); err != nil {
		return "", fmt.Errorf("write format config: %w", err)
	}
	args := append(c.jvmArgs(128, false), "kafka.tools.StorageTool", "format", "-t", c.clusterID, "-c", n.propsFile())
	args = append(args, c.scramArgs()...)
	if out, err := exec.CommandContext(ctx, c.java, args...).CombinedOutput(); err != nil {
		// The output can echo the --add-scram arguments: passwords stay out of errors.
		return "", fmt.Errorf("format kafka storage: %w\n%s", err, c.redact(string(out)))
	}
	return filepath.Join(n.dir, "data"), nil
}

// renameIntoPlace renames a freshly made file or directory to final, atomically. Where the
// jars' directory is read-only, or a concurrent test process won the race, it returns
// what is there, or else the private copy.
func renameIntoPlace(made, final string) string {
	if err := os.Rename(made, final); err != nil {
		if _, statErr := os.Stat(final); statErr == nil {
			return final
		}
		return made
	}
	return final
}

// classArchive returns the class-data sharing archive for this JVM and these jars
// (about 2 of 6.5 seconds off a cluster's start here), making it first if need be:
// Java 17 writes one when a JVM started with -XX:ArchiveClassesAtExit exits normally,
// so a lone node is started, waited for and shut down cleanly. It returns "" when no
// archive can be had; the nodes then start without one.
func (c *Cluster) classArchive(ctx context.Context) string {
	final := filepath.Join(filepath.Dir(c.cfg.Libs), "classes-"+c.jvmKey()+".jsa")
	if _, err := os.Stat(final); err == nil {
		return final
	}
	work, err := os.MkdirTemp(c.dir, "archive-")
	if err != nil {
		return ""
	}
	ports, err := freePorts(2)
	if err != nil {
		return ""
	}
	n := &node{id: 1, brokerPort: ports[0], controllerPort: ports[1], dir: work}
	// A cluster of its own with one voter, so that it serves without the others; plain,
	// as the harness waits for it without credentials.
	plain := c.cfg
	plain.Security = nil
	alone := &Cluster{cfg: plain, java: c.java, clusterID: c.clusterID, nodes: []*node{n}}
	if _, err := alone.formatNode(ctx, n, alone.properties(n)); err != nil {
		return ""
	}
	made := filepath.Join(work, "classes.jsa")
	args := append(c.jvmArgs(c.cfg.HeapMB, false), "-XX:ArchiveClassesAtExit="+made, "kafka.Kafka", n.propsFile())
	cmd := exec.Command(c.java, args...)
	log, err := os.Create(filepath.Join(work, "server.log"))
	if err != nil {
		return ""
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	if err := start(cmd); err != nil {
		return ""
	}
	exited := make(chan struct{})
	go func() { // ends with the process, which this function waits for below
		_ = cmd.Wait()
		close(exited)
	}()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
	}()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		if meta, err := nodeMetadata(ctx, n.addr(), []string{}); err == nil && len(meta.Brokers) == 1 {
			break
		}
		select {
		case <-exited:
			return ""
		case <-ctx.Done():
			return ""
		case <-time.After(poll):
		}
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-ctx.Done():
		return ""
	}
	if _, err := os.Stat(made); err != nil {
		return ""
	}
	return renameIntoPlace(made, final)
}

// jvmKey names what an archive is valid for: this java binary (the archive holds its
// build's classes) and these jars.
func (c *Cluster) jvmKey() string {
	h := sha256.New()
	java, _ := filepath.EvalSymlinks(c.java)
	fmt.Fprintln(h, java)
	if fi, err := os.Stat(java); err == nil {
		fmt.Fprintln(h, fi.Size(), fi.ModTime().UnixNano())
	}
	libs, _ := filepath.Abs(c.cfg.Libs)
	fmt.Fprintln(h, libs, c.version, strconv.Itoa(os.Getuid()))
	if fi, err := os.Stat(libs); err == nil { // make kafka fetched them again
		fmt.Fprintln(h, fi.ModTime().UnixNano())
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}
