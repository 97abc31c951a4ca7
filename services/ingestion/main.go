// Command ingestion takes customers' events in over HTTP, enforces the throttles it reads
// from the compacted throttle topic, and writes accepted events to the events topic.
package main

import (
	"fmt"
	"os"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

func main() {
	fmt.Fprintf(os.Stderr, "ingestion: not built yet (throttle topic %s)\n", throttle.DefaultTopic)
	os.Exit(1)
}
