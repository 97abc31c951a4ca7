// Command kafkatools stands in for the two scripts of the official apache/kafka image
// that Sluice's compose file and e2e suite call, in the Kafka image built where no image
// can be pulled (deploy/kafka/image): the jars Maven serves do not include kafka-tools.
// It is one binary linked under both names and does only what those callers use:
//
//	kafka-topics.sh --bootstrap-server H:P --create [--if-not-exists] --topic T
//	    --partitions N --replication-factor R [--config k=v]...
//	kafka-topics.sh --bootstrap-server H:P --describe [--topic REGEX]
//	kafka-broker-api-versions.sh --bootstrap-server H:P
//
// Any other flag is refused, so a caller that needs more finds out at once.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if name == "kafkatools" && len(args) > 0 { // kafkatools kafka-topics.sh ...
		name, args = args[0], args[1:]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var err error
	switch strings.TrimSuffix(name, ".sh") {
	case "kafka-topics":
		err = topics(ctx, os.Stdout, args)
	case "kafka-broker-api-versions":
		err = apiVersions(ctx, os.Stdout, args)
	default:
		err = fmt.Errorf("unknown command %q: kafka-topics.sh or kafka-broker-api-versions.sh", name)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

type configs map[string]string

func (c configs) String() string { return fmt.Sprint(map[string]string(c)) }
func (c configs) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("--config %q: want key=value", s)
	}
	c[k] = v
	return nil
}

func topics(ctx context.Context, out io.Writer, args []string) error {
	fs := flag.NewFlagSet("kafka-topics.sh", flag.ContinueOnError)
	bootstrap := fs.String("bootstrap-server", "", "a broker, host:port")
	create := fs.Bool("create", false, "create the topic")
	describe := fs.Bool("describe", false, "describe topics matching --topic")
	ifNotExists := fs.Bool("if-not-exists", false, "with --create: an existing topic is no error")
	topic := fs.String("topic", "", "the topic (a regular expression with --describe)")
	partitions := fs.Int("partitions", 1, "partitions of a new topic")
	rf := fs.Int("replication-factor", 1, "replication factor of a new topic")
	cfg := configs{}
	fs.Var(cfg, "config", "a topic config, key=value (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *bootstrap == "" || *create == *describe {
		return errors.New("want --bootstrap-server and one of --create, --describe")
	}
	client := &kafka.Client{Addr: kafka.TCP(strings.Split(*bootstrap, ",")...), Timeout: 30 * time.Second}
	if *create {
		if *topic == "" {
			return errors.New("--create needs --topic")
		}
		entries := make([]kafka.ConfigEntry, 0, len(cfg))
		for k, v := range cfg {
			entries = append(entries, kafka.ConfigEntry{ConfigName: k, ConfigValue: v})
		}
		resp, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
			Topic: *topic, NumPartitions: *partitions, ReplicationFactor: *rf, ConfigEntries: entries,
		}}})
		if err != nil {
			return fmt.Errorf("create %s: %w", *topic, err)
		}
		switch err := resp.Errors[*topic]; {
		case err == nil:
			fmt.Fprintf(out, "Created topic %s.\n", *topic)
		case *ifNotExists && errors.Is(err, kafka.TopicAlreadyExists):
		default:
			return fmt.Errorf("create %s: %w", *topic, err)
		}
		return nil
	}
	return describeTopics(ctx, out, client, *topic)
}

func describeTopics(ctx context.Context, out io.Writer, client *kafka.Client, pattern string) error {
	re, err := regexp.Compile("^(?:" + pattern + ")$")
	if err != nil {
		return fmt.Errorf("--topic %q: %w", pattern, err)
	}
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		return err
	}
	sort.Slice(md.Topics, func(i, j int) bool { return md.Topics[i].Name < md.Topics[j].Name })
	for _, t := range md.Topics {
		if t.Internal || !re.MatchString(t.Name) {
			continue
		}
		if t.Error != nil {
			return fmt.Errorf("describe %s: %w", t.Name, t.Error)
		}
		dc, err := client.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
			ResourceType: kafka.ResourceTypeTopic, ResourceName: t.Name,
		}}})
		if err != nil {
			return fmt.Errorf("describe %s configs: %w", t.Name, err)
		}
		var set []string
		for _, r := range dc.Resources {
			for _, e := range r.ConfigEntries {
				if !e.IsDefault && e.ConfigSource == 1 { // DYNAMIC_TOPIC_CONFIG: set on the topic
					set = append(set, e.ConfigName+"="+e.ConfigValue)
				}
			}
		}
		sort.Strings(set)
		rf := 0
		if len(t.Partitions) > 0 {
			rf = len(t.Partitions[0].Replicas)
		}
		fmt.Fprintf(out, "Topic: %s\tPartitionCount: %d\tReplicationFactor: %d\tConfigs: %s\n", t.Name, len(t.Partitions), rf, strings.Join(set, ","))
		sort.Slice(t.Partitions, func(i, j int) bool { return t.Partitions[i].ID < t.Partitions[j].ID })
		for _, p := range t.Partitions {
			fmt.Fprintf(out, "\tTopic: %s\tPartition: %d\tLeader: %d\tReplicas: %s\tIsr: %s\n", t.Name, p.ID, p.Leader.ID, ids(p.Replicas), ids(p.Isr))
		}
	}
	return nil
}

func ids(bs []kafka.Broker) string {
	s := make([]string, len(bs))
	for i, b := range bs {
		s[i] = fmt.Sprint(b.ID)
	}
	return strings.Join(s, ",")
}

// apiVersions answers when the broker does: the image's health check.
func apiVersions(ctx context.Context, out io.Writer, args []string) error {
	fs := flag.NewFlagSet("kafka-broker-api-versions.sh", flag.ContinueOnError)
	bootstrap := fs.String("bootstrap-server", "", "a broker, host:port")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(*bootstrap); err != nil {
		return fmt.Errorf("--bootstrap-server %q: %w", *bootstrap, err)
	}
	client := &kafka.Client{Addr: kafka.TCP(*bootstrap), Timeout: 10 * time.Second}
	resp, err := client.ApiVersions(ctx, &kafka.ApiVersionsRequest{})
	if err != nil {
		return err
	}
	if resp.Error != nil {
		return resp.Error
	}
	fmt.Fprintf(out, "%s: %d APIs\n", *bootstrap, len(resp.ApiKeys))
	return nil
}
