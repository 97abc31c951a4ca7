package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/segmentio/kafka-go"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/cluster"
)

func ensureTopicCommand() *command {
	return &command{
		name: "ensure-topic", summary: "create the throttle topic, or check an existing one", output: true,
		help: `
Creates the compacted throttle topic with Sluice's settings (throttle.EnsureTopic), or
checks an existing one: it fails when the topic's cleanup.policy is not compact, and
warns when its partition count differs from --partitions (it is never changed:
repartitioning a compacted topic strands keys). Partitions, replication factor and
min.insync.replicas default to THROTTLE_TOPIC_PARTITIONS, TOPIC_REPLICATION_FACTOR and
TOPIC_MIN_INSYNC_REPLICAS; the replication factor is capped by the cluster's size.`,
		define: func(fs *flag.FlagSet) action {
			partitions := fs.Int("partitions", 0, "partitions of a new topic (default $THROTTLE_TOPIC_PARTITIONS or 6)")
			return func(ctx context.Context, s *session, _ []string) error {
				if *partitions < 0 {
					return usagef("--partitions %d: want a positive number", *partitions)
				}
				kc, err := s.kafka()
				if err != nil {
					return err
				}
				spec := s.cfg.TopicSpec()
				if *partitions > 0 {
					spec.Partitions = *partitions
				}
				// EnsureTopic's first request fails the same way as any other: name the
				// brokers when they are the reason.
				if err := reachable(ctx, kc, spec.Name); err != nil {
					return s.unreachable(ctx, kc, spec.Name, err)
				}
				info, err := throttle.EnsureTopic(ctx, kc, spec)
				if err != nil {
					return err
				}
				for _, w := range info.Warnings {
					fmt.Fprintf(s.stderr, "warning: %s\n", w)
				}
				if s.json {
					return writeJSON(s.stdout, map[string]any{
						"topic": info.Name, "created": info.Created, "partitions": info.Partitions,
						"replication_factor": info.ReplicationFactor, "warnings": append([]string{}, info.Warnings...),
					})
				}
				verb := "exists and is compacted"
				if info.Created {
					verb = "created"
				}
				_, err = fmt.Fprintf(s.stdout, "topic %s %s: %d partitions, replication factor %d\n", info.Name, verb, info.Partitions, info.ReplicationFactor)
				return err
			}
		},
	}
}

// reachable sends the brokers a metadata request for topic.
func reachable(ctx context.Context, kc cluster.Config, topic string) error {
	cl, done := newClient(ctx, kc)
	defer done()
	_, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	return err
}
