// Command throttlectl is the operators' tool for Sluice's throttle topic: it lists, sets
// and lifts throttles, dumps the topic and restores it, watches it change, and prints its
// own version. It reads the same environment variables as the services; flags override
// them. See README.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
