package throttle_test

import (
	"context"
	"fmt"
	"time"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
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

	kc := cluster.Config{Brokers: stack.Brokers()}
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

// exampleStack starts the in-process broker and registry the examples run on, with the
// throttle topic created. A real deployment gives its brokers and registry instead.
func exampleStack(ctx context.Context) (*throttletest.Stack, cluster.Config, throttle.RegistryConfig) {
	stack, err := throttletest.New(throttletest.Options{})
	if err != nil {
		panic(err)
	}
	kc := cluster.Config{Brokers: stack.Brokers()}
	reg := throttle.RegistryConfig{URL: stack.RegistryURL()}
	if _, err := throttle.EnsureTopic(ctx, kc, throttle.TopicSpec{Partitions: 3}); err != nil {
		panic(err)
	}
	return stack, kc, reg
}

// An ingestion replica's table: rebuilt from offset zero, ready once caught up, then
// following the topic. Lookup is what each event's admission asks.
func ExampleTable() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stack, kc, reg := exampleStack(ctx)
	defer stack.Close()

	// A throttle already on the topic before the replica starts.
	pubCodec, _ := throttle.NewCodec(reg, throttle.DefaultTopic)
	pub, _ := throttle.NewPublisher(kc, throttle.DefaultTopic, pubCodec)
	defer pub.Close()
	now := time.Now()
	if err := pub.Set(ctx, throttle.Record{
		ID: "t-1", Customer: "acme", Limit: 100, Window: time.Minute, CreatedAt: now, ExpiresAt: now.Add(time.Hour),
		Reason: throttle.Reason{Kind: throttle.ReasonManual, Note: "example"}, SetBy: "operator",
	}); err != nil {
		panic(err)
	}

	codec, _ := throttle.NewCodec(reg, throttle.DefaultTopic)
	table, err := throttle.NewTable(kc, throttle.DefaultTopic, codec)
	if err != nil {
		panic(err)
	}
	go table.Run(ctx) //nolint:errcheck // returns nil when ctx ends
	if err := table.WaitReady(ctx); err != nil {
		panic(err)
	}
	// Ready means caught up: the throttle written before is there without waiting.
	rule, ok := table.Lookup("acme")
	fmt.Println(ok, rule.Limit, rule.Window)
	_, ok = table.Lookup("globex")
	fmt.Println(ok, table.Stats().Ready)
	// Output:
	// true 100 1m0s
	// false true
}

// A processing service or an operator sets a throttle and lifts it; every table follows.
func ExamplePublisher() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stack, kc, reg := exampleStack(ctx)
	defer stack.Close()

	codec, _ := throttle.NewCodec(reg, throttle.DefaultTopic)
	pub, err := throttle.NewPublisher(kc, throttle.DefaultTopic, codec)
	if err != nil {
		panic(err)
	}
	defer pub.Close()
	readCodec, _ := throttle.NewCodec(reg, throttle.DefaultTopic)
	table, _ := throttle.NewTable(kc, throttle.DefaultTopic, readCodec)
	go table.Run(ctx) //nolint:errcheck // returns nil when ctx ends
	if err := table.WaitReady(ctx); err != nil {
		panic(err)
	}
	waitFor := func(want bool) {
		for ctx.Err() == nil {
			if _, ok := table.Get("acme"); ok == want {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		panic(ctx.Err())
	}

	now := time.Now()
	// Set returns once every in-sync replica has the record (acks=all).
	if err := pub.Set(ctx, throttle.Record{
		ID: "t-2", Customer: "acme", Limit: 20, Window: time.Minute, CreatedAt: now, ExpiresAt: now.Add(10 * time.Minute),
		Reason: throttle.Reason{Kind: throttle.ReasonManual, Note: "runaway batch job"}, SetBy: "operator",
	}); err != nil {
		panic(err)
	}
	waitFor(true)
	r, _ := table.Get("acme")
	fmt.Println("set:", r.ID, r.Limit, r.Reason.Note)

	// Lift writes a tombstone: the key is gone from every table, and compaction drops it.
	if err := pub.Lift(ctx, "acme"); err != nil {
		panic(err)
	}
	waitFor(false)
	fmt.Println("lifted")
	// Output:
	// set: t-2 20 runaway batch job
	// lifted
}
