package throttle_test

import (
	"context"
	"fmt"
	"time"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/throttletest"
)

// A processing service publishes a throttle; an ingestion replica, which rebuilt its
// table from the topic, sees it.
func Example() {
	stack, err := throttletest.New(throttletest.Options{})
	if err != nil {
		panic(err)
	}
	defer stack.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	kc := throttle.KafkaConfig{Brokers: stack.Brokers()}
	reg := throttle.RegistryConfig{URL: stack.RegistryURL()}
	if _, err := throttle.EnsureTopic(ctx, kc, throttle.TopicSpec{Partitions: 3}); err != nil {
		panic(err)
	}

	// Ingestion side: a table rebuilt from offset zero, ready once caught up.
	readCodec, _ := throttle.NewCodec(reg, throttle.DefaultTopic)
	table, _ := throttle.NewTable(kc, throttle.DefaultTopic, readCodec)
	go table.Run(ctx) //nolint:errcheck // returns nil when ctx ends
	if err := table.WaitReady(ctx); err != nil {
		panic(err)
	}

	// Processing side: publish "acme: at most 20 events per minute for 10 minutes".
	writeCodec, _ := throttle.NewCodec(reg, throttle.DefaultTopic)
	pub, _ := throttle.NewPublisher(kc, throttle.DefaultTopic, writeCodec)
	defer pub.Close()
	now := time.Now()
	err = pub.Set(ctx, throttle.Record{
		ID: "example-1", Customer: "acme", Limit: 20, Window: time.Minute,
		CreatedAt: now, ExpiresAt: now.Add(10 * time.Minute),
		Reason: throttle.Reason{Kind: throttle.ReasonManual, Note: "runaway batch job"},
		SetBy:  "operator",
	})
	if err != nil {
		panic(err)
	}

	for {
		if r, ok := table.Lookup("acme"); ok {
			fmt.Printf("acme: %d per %s (%s)\n", r.Limit, r.Window, r.Mode)
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	_, ok := table.Lookup("globex")
	fmt.Println("globex throttled:", ok)
	// Output:
	// acme: 20 per 1m0s (enforce)
	// globex throttled: false
}

func ExampleRecord_Validate() {
	r := throttle.Record{ID: "x", Customer: "acme\n", Limit: 20, Window: time.Minute}
	fmt.Println(r.Validate())
	// Output: throttle: invalid record: customer has control character U+000A at byte 4
}
