//go:build !linux

package kafkacluster

import "os/exec"

// start starts cmd. Only Linux can tie a child's life to this process; elsewhere a test
// process that dies without Close leaves its nodes running.
func start(cmd *exec.Cmd) error { return cmd.Start() }
