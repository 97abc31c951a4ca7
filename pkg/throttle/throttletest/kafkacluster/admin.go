package kafkacluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// poll is how often the waits ask the cluster again.
const poll = 100 * time.Millisecond

// client returns a client for the given seeds. The harness makes one per operation and
// closes it, so no connection or goroutine of its own outlives a call.
func client(seeds ...string) (*kgo.Client, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.DialTimeout(time.Second),
		kgo.RequestTimeoutOverhead(2*time.Second), kgo.RetryTimeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("kafka admin client: %w", err)
	}
	return cl, nil
}

// runningNodes are the nodes whose process is alive.
func (c *Cluster) runningNodes() []*node {
	var out []*node
	for _, n := range c.nodes {
		if n.running() {
			out = append(out, n)
		}
	}
	return out
}

// waitServing waits until every running node answers on its broker port and lists
// every running node as a live (registered, unfenced) broker. It fails at once if one
// of the nodes just started dies.
func (c *Cluster) waitServing(ctx context.Context, started []*node) error {
	var last error
	for {
		for _, n := range started {
			select {
			case <-n.wait():
				return fmt.Errorf("kafka node %d exited while starting; its log ends:\n%s", n.id, tail(c.LogFile(n.id), 30))
			default:
			}
		}
		if last = c.serving(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for kafka nodes to serve: %w (last: %w)", ctx.Err(), last)
		case <-time.After(poll):
		}
	}
}

func (c *Cluster) serving(ctx context.Context) error {
	running := c.runningNodes()
	want := make([]int32, len(running))
	for i, n := range running {
		want[i] = int32(n.id)
	}
	for _, n := range running {
		meta, err := nodeMetadata(ctx, n.adminAddr(), []string{})
		if err != nil {
			return fmt.Errorf("node %d: %w", n.id, err)
		}
		var have []int32
		for _, b := range meta.Brokers {
			have = append(have, b.NodeID)
		}
		for _, id := range want {
			if !slices.Contains(have, id) {
				return fmt.Errorf("node %d lists brokers %v, not yet %d", n.id, have, id)
			}
		}
	}
	return nil
}

// nodeMetadata asks the broker at addr itself (not whichever broker a client prefers)
// for the metadata of topics: none when topics is empty, every topic when it is nil.
// Each broker applies the controller's changes on its own, a moment apart, so the
// waits ask every node.
func nodeMetadata(ctx context.Context, addr string, topics []string) (*kmsg.MetadataResponse, error) {
	cl, err := client(addr)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req := kmsg.NewPtrMetadataRequest()
	if topics != nil {
		req.Topics = make([]kmsg.MetadataRequestTopic, len(topics))
		for i, t := range topics {
			req.Topics[i].Topic = kmsg.StringPtr(t)
		}
	}
	resp, err := cl.SeedBrokers()[0].Request(rctx, req)
	if err != nil {
		return nil, err
	}
	return resp.(*kmsg.MetadataResponse), nil
}

// everyNode calls check with the metadata of topics (see nodeMetadata) as each running
// node sees it, and returns the first error.
func (c *Cluster) everyNode(ctx context.Context, topics []string, check func(*kmsg.MetadataResponse) error) error {
	running := c.runningNodes()
	if len(running) == 0 {
		return errors.New("no kafka node is running")
	}
	for _, n := range running {
		meta, err := nodeMetadata(ctx, n.adminAddr(), topics)
		if err != nil {
			return fmt.Errorf("node %d: %w", n.id, err)
		}
		if err := check(meta); err != nil {
			return fmt.Errorf("node %d: %w", n.id, err)
		}
	}
	return nil
}

// WaitLeaders waits until every partition of topic (of every topic, internal ones
// included, when topic is "") has a leader on a running node and at least isr replicas
// in sync (isr <= 0: every replica that runs). After Kill, that is once the dead node
// is fenced and its leaderships moved; after Start, once the node has caught up.
func (c *Cluster) WaitLeaders(ctx context.Context, topic string, isr int) error {
	var last error
	for {
		if last = c.leadersReady(ctx, topic, isr); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for leaders of %q: %w (last: %w)", topic, ctx.Err(), last)
		case <-time.After(poll):
		}
	}
}

func (c *Cluster) leadersReady(ctx context.Context, topic string, isr int) error {
	var topics []string // every topic
	if topic != "" {
		topics = []string{topic}
	}
	return c.everyNode(ctx, topics, func(meta *kmsg.MetadataResponse) error {
		if topic != "" && len(meta.Topics) != 1 {
			return fmt.Errorf("metadata of %s: %d topics", topic, len(meta.Topics))
		}
		for _, t := range meta.Topics {
			if err := c.partitionsLed(t, isr); err != nil {
				return err
			}
		}
		return nil
	})
}

func (c *Cluster) partitionsLed(t kmsg.MetadataResponseTopic, isr int) error {
	name := deref(t.Topic)
	if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
		return fmt.Errorf("metadata of %s: %w", name, err)
	}
	if len(t.Partitions) == 0 {
		return fmt.Errorf("metadata of %s: no partitions", name)
	}
	for _, p := range t.Partitions {
		if p.Leader < 0 || !c.Running(int(p.Leader)) {
			return fmt.Errorf("%s/%d: leader %d is not a running node", name, p.Partition, p.Leader)
		}
		want := isr
		if want <= 0 {
			want = 0
			for _, r := range p.Replicas {
				if c.Running(int(r)) {
					want++
				}
			}
		}
		if len(p.ISR) < want {
			return fmt.Errorf("%s/%d: in-sync replicas %v, want %d", name, p.Partition, p.ISR, want)
		}
	}
	return nil
}

// WaitGroupCoordinators waits until a group coordinator answers for every partition of
// __consumer_offsets, creating the topic if need be (Kafka creates it on the first
// group request). A test's first OffsetFetch otherwise meets NOT_COORDINATOR while the
// topic's partitions are being led and loaded.
func (c *Cluster) WaitGroupCoordinators(ctx context.Context) error {
	n, err := strconv.Atoi(c.props(c.nodes[0])["offsets.topic.num.partitions"])
	if err != nil || n <= 0 {
		n = 50
	}
	groups := groupPerPartition(n)
	var last error
	for {
		if last = c.coordinatorsReady(ctx, groups); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for group coordinators: %w (last: %w)", ctx.Err(), last)
		case <-time.After(poll):
		}
	}
}

func (c *Cluster) coordinatorsReady(ctx context.Context, groups []string) error {
	cl, err := client(c.adminBrokers()...)
	if err != nil {
		return err
	}
	defer cl.Close()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req := kmsg.NewPtrOffsetFetchRequest()
	for _, g := range groups {
		rg := kmsg.NewOffsetFetchRequestGroup()
		rg.Group = g
		req.Groups = append(req.Groups, rg)
	}
	resp, err := req.RequestWith(rctx, cl)
	if err != nil {
		return err
	}
	for _, g := range resp.Groups {
		if err := kerr.ErrorForCode(g.ErrorCode); err != nil {
			return fmt.Errorf("offset fetch of group %s: %w", g.Group, err)
		}
	}
	return nil
}

// groupPerPartition names one group for each of n partitions of __consumer_offsets, by
// Kafka's placement: the group id's Java hash code, made positive, modulo n.
func groupPerPartition(n int) []string {
	out := make([]string, n)
	found := 0
	for i := 0; found < n; i++ {
		g := "sluice-warm-up-" + strconv.Itoa(i)
		var h int32
		for _, r := range g { // ASCII: one UTF-16 unit per rune
			h = 31*h + int32(r)
		}
		if p := int(h&0x7fffffff) % n; out[p] == "" {
			out[p] = g
			found++
		}
	}
	return out
}

// Leader returns the node that leads partition of topic, as the first running node
// sees it (after WaitLeaders, every node agrees).
func (c *Cluster) Leader(ctx context.Context, topic string, partition int) (int, error) {
	running := c.runningNodes()
	if len(running) == 0 {
		return 0, fmt.Errorf("leader of %s/%d: no kafka node is running", topic, partition)
	}
	meta, err := nodeMetadata(ctx, running[0].adminAddr(), []string{topic})
	if err != nil {
		return 0, fmt.Errorf("leader of %s/%d: %w", topic, partition, err)
	}
	for _, t := range meta.Topics {
		for _, p := range t.Partitions {
			if int(p.Partition) == partition {
				if p.Leader < 0 {
					return 0, fmt.Errorf("leader of %s/%d: none", topic, partition)
				}
				return int(p.Leader), nil
			}
		}
	}
	return 0, fmt.Errorf("leader of %s/%d: no such partition", topic, partition)
}

// Reset makes the cluster look fresh to a client: it deletes every topic that is not
// internal and every consumer group, removes the broker defaults SetBrokerDefaults set,
// and waits until the topics are gone. Every node must run.
func (c *Cluster) Reset(ctx context.Context) error {
	cl, err := client(c.adminBrokers()...)
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := deleteGroups(ctx, cl); err != nil {
		return err
	}
	if err := c.deleteTopics(ctx, cl); err != nil {
		return err
	}
	if c.cfg.Security != nil {
		if err := deleteACLs(ctx, cl); err != nil {
			return err
		}
	}
	return c.resetBrokerDefaults(ctx, cl)
}

func (c *Cluster) deleteTopics(ctx context.Context, cl *kgo.Client) error {
	for {
		var names []string
		err := c.everyNode(ctx, nil, func(meta *kmsg.MetadataResponse) error {
			for _, t := range meta.Topics {
				name := deref(t.Topic)
				if !t.IsInternal && !strings.HasPrefix(name, "__") && !slices.Contains(names, name) {
					names = append(names, name)
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("list topics: %w", err)
		}
		if len(names) == 0 {
			return nil
		}
		req := kmsg.NewPtrDeleteTopicsRequest()
		req.TimeoutMillis = 10_000
		req.TopicNames = names // versions before 6
		for _, name := range names {
			req.Topics = append(req.Topics, kmsg.DeleteTopicsRequestTopic{Topic: kmsg.StringPtr(name)})
		}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return fmt.Errorf("delete topics %v: %w", names, err)
		}
		for _, t := range resp.Topics {
			if err := kerr.ErrorForCode(t.ErrorCode); err != nil && !errors.Is(err, kerr.UnknownTopicOrPartition) {
				return fmt.Errorf("delete topic %v: %w", deref(t.Topic), err)
			}
		}
		// Listed again until no node shows them: a node applies the deletion a moment
		// after the controller (it then answers UNKNOWN_TOPIC_OR_PARTITION, ignored above).
		select {
		case <-ctx.Done():
			return fmt.Errorf("delete topics %v: %w", names, ctx.Err())
		case <-time.After(poll):
		}
	}
}

func deleteGroups(ctx context.Context, cl *kgo.Client) error {
	var groups []string
	for _, shard := range cl.RequestSharded(ctx, kmsg.NewPtrListGroupsRequest()) {
		if shard.Err != nil {
			return fmt.Errorf("list groups on broker %d: %w", shard.Meta.NodeID, shard.Err)
		}
		for _, g := range shard.Resp.(*kmsg.ListGroupsResponse).Groups {
			groups = append(groups, g.Group)
		}
	}
	if len(groups) == 0 {
		return nil
	}
	req := kmsg.NewPtrDeleteGroupsRequest()
	req.Groups = groups
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("delete groups %v: %w", groups, err)
	}
	for _, g := range resp.Groups {
		// A group still in use belongs to a test that has not stopped its consumers;
		// its topics go anyway, and an empty group costs the next test nothing.
		if err := kerr.ErrorForCode(g.ErrorCode); err != nil && !errors.Is(err, kerr.NonEmptyGroup) && !errors.Is(err, kerr.GroupIDNotFound) {
			return fmt.Errorf("delete group %s: %w", g.Group, err)
		}
	}
	return nil
}

// SetBrokerDefaults sets broker-wide dynamic configs (as kafka-configs --entity-default
// does), for example log.segment.bytes; Reset removes them.
func (c *Cluster) SetBrokerDefaults(ctx context.Context, configs map[string]string) error {
	if len(configs) == 0 {
		return nil
	}
	cl, err := client(c.adminBrokers()...)
	if err != nil {
		return err
	}
	defer cl.Close()
	c.mu.Lock()
	for k := range configs {
		c.brokerDefaults[k] = true // before the request: it may apply though it fails
	}
	c.mu.Unlock()
	res := kmsg.IncrementalAlterConfigsRequestResource{ResourceType: kmsg.ConfigResourceTypeBroker}
	for k, v := range configs {
		res.Configs = append(res.Configs, kmsg.IncrementalAlterConfigsRequestResourceConfig{
			Name: k, Op: kmsg.IncrementalAlterConfigOpSet, Value: kmsg.StringPtr(v),
		})
	}
	return alterConfigs(ctx, cl, res)
}

func alterConfigs(ctx context.Context, cl *kgo.Client, res kmsg.IncrementalAlterConfigsRequestResource) error {
	req := kmsg.NewPtrIncrementalAlterConfigsRequest()
	req.Resources = []kmsg.IncrementalAlterConfigsRequestResource{res}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("alter broker defaults: %w", err)
	}
	for _, r := range resp.Resources {
		if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
			return fmt.Errorf("alter broker defaults: %w: %s", err, deref(r.ErrorMessage))
		}
	}
	return nil
}

func (c *Cluster) resetBrokerDefaults(ctx context.Context, cl *kgo.Client) error {
	c.mu.Lock()
	names := slices.Sorted(maps.Keys(c.brokerDefaults))
	c.mu.Unlock()
	if len(names) == 0 {
		return nil
	}
	res := kmsg.IncrementalAlterConfigsRequestResource{ResourceType: kmsg.ConfigResourceTypeBroker}
	for _, name := range names {
		res.Configs = append(res.Configs, kmsg.IncrementalAlterConfigsRequestResourceConfig{
			Name: name, Op: kmsg.IncrementalAlterConfigOpDelete,
		})
	}
	if err := alterConfigs(ctx, cl, res); err != nil {
		return err
	}
	c.mu.Lock()
	clear(c.brokerDefaults)
	c.mu.Unlock()
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// tail returns the last n lines of file, for errors that need the node's own words.
func tail(file string, n int) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
