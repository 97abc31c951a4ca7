package kafkacluster

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// start starts cmd so that the kernel kills it when this process ends, however it ends
// (a test timeout, a panic, SIGKILL): a JVM left behind would hold its ports and memory.
// The death signal fires when the thread that forked the child exits, and Go ends a
// thread whose goroutine exits while locked to it; so every fork runs on one thread
// locked for the life of the process.
func start(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	req := spawnReq{cmd: cmd, err: make(chan error, 1)}
	spawner() <- req
	return <-req.err
}

type spawnReq struct {
	cmd *exec.Cmd
	err chan error
}

var spawner = sync.OnceValue(func() chan<- spawnReq {
	ch := make(chan spawnReq)
	go func() {
		runtime.LockOSThread() // never unlocked: this thread must outlive every child
		for req := range ch {
			req.err <- req.cmd.Start()
		}
	}()
	return ch
})
