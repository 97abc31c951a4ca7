// Command processing consumes the events topic, detects customers that overload the
// pipeline, and publishes throttles for them to the compacted throttle topic.
package main

import (
	"fmt"
	"os"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

func main() {
	fmt.Fprintf(os.Stderr, "processing: not built yet (throttle topic %s)\n", throttle.DefaultTopic)
	os.Exit(1)
}
