package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

// The faults only a cluster has. Each scenario runs on a stack of its own, with churn
// (throttles set and lifted through the admin API, one request at a time) and traffic
// (a throttled customer, a bystander, /readyz, on every replica) running through the
// fault. What must hold: every acknowledged outcome is on the log, in processing and
// on every replica afterwards; the throttled customer is refused every time.

// requireCluster skips a scenario that needs three brokers on the fake broker
// (E2E_KAFKA_IMAGE=fake, for quick local runs only).
func (s *stack) requireCluster(t *testing.T) {
	t.Helper()
	if len(s.brokers) < 3 {
		t.Skip("needs a real cluster of three brokers: not with E2E_KAFKA_IMAGE=fake")
	}
}

// partitions reads topic's partitions (offsets, leader, replicas, ISR) through the probe.
func (s *stack) partitions(ctx context.Context, topic string) (topicDump, error) {
	var d topicDump
	base, err := s.probe.url(ctx)
	if err != nil {
		return d, err
	}
	status, _, err := do(ctx, http.MethodGet, base+"/v1/topics/"+url.PathEscape(topic)+"?records=false", "", nil, &d)
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("probe: partitions of %s: status %d", topic, status)
	}
	return d, err
}

// throttleLeader returns the broker that leads most partitions of the throttle topic,
// the partitions it leads, and how many there are.
func (s *stack) throttleLeader(t *testing.T) (victim *node, led map[int]bool, partitions int) {
	t.Helper()
	var leader int
	eventually(t, 30*time.Second, 200*time.Millisecond, "throttle topic's leaders", func(ctx context.Context) (bool, string) {
		d, err := s.partitions(ctx, throttle.DefaultTopic)
		if err != nil {
			return false, err.Error()
		}
		count := map[int]int{}
		for _, p := range d.Partitions {
			count[p.Leader]++
		}
		leader = 0
		for id, n := range count {
			if id >= 1 && id <= len(s.brokers) && (leader == 0 || n > count[leader] || n == count[leader] && id < leader) {
				leader = id
			}
		}
		led, partitions = map[int]bool{}, len(d.Partitions)
		for _, p := range d.Partitions {
			if p.Leader == leader {
				led[p.Partition] = true
			}
		}
		return leader != 0, fmt.Sprintf("leaders %v", count)
	})
	return s.broker(leader), led, partitions
}

// waitInSync waits until every partition of the stack's topics has all three brokers in
// sync, and returns how long that took.
func (s *stack) waitInSync(t *testing.T, timeout time.Duration) time.Duration {
	t.Helper()
	return eventually(t, timeout, 250*time.Millisecond, "every replica in sync", func(ctx context.Context) (bool, string) {
		for _, topic := range []string{throttle.DefaultTopic, "events"} {
			d, err := s.partitions(ctx, topic)
			if err != nil {
				return false, err.Error()
			}
			for _, p := range d.Partitions {
				if len(p.ISR) < len(s.brokers) {
					return false, fmt.Sprintf("%s/%d: ISR %v", topic, p.Partition, p.ISR)
				}
			}
		}
		return true, ""
	})
}

// brokerFault runs churn and traffic, applies fault to the throttle topic's main leader,
// heals it after faultFor, and checks what must hold.
func brokerFault(t *testing.T, name, what string, faultFor time.Duration, fault, heal func(ctx context.Context, s *stack, victim *node) error) {
	s := newStack(t, name)
	s.requireCluster(t)
	s.waitFleet(t, 2)
	s.enforced(t, uniq(name+"-throttled"))
	bases := s.bases(t)
	ch := newChurn(s, uniq(name), 60)
	tr := startTraffic(bases, s.mustThrottled(t), uniq(name+"-bystander"))
	stopChurn := ch.start()
	time.Sleep(2 * time.Second)

	victim, led, partitions := s.throttleLeader(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	faultAt := time.Now()
	if err := fault(ctx, s, victim); err != nil {
		t.Fatal(err)
	}
	time.Sleep(faultFor)
	healAt := time.Now()
	if err := heal(ctx, s, victim); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	// Failover: writes to the partitions the victim led are acknowledged again while it
	// is still down (in the last third of the fault), and the longest pause in between.
	onVictim := func(c string) bool { return led[partitionOf(c, partitions)] }
	late, _ := ch.acksBetween(healAt.Add(-faultFor/3), healAt, onVictim)
	all, pause := ch.acksBetween(faultAt, healAt, func(string) bool { return true })
	if late == 0 {
		t.Errorf("%s: no write to the %d partitions %s led was acknowledged in the last third of the fault (%s)", what, len(led), victim.name, ch.summary())
	}
	report(t, "%s %s (leader of %d of %d throttle partitions): %d writes acknowledged during the fault, %d to its partitions in the last third; longest pause without one %s",
		what, victim.name, len(led), partitions, all, late, round(pause))
	insync := s.waitInSync(t, 2*time.Minute)
	time.Sleep(time.Second)
	stopChurn()
	tr.halt()
	_, during := tr.check(t, faultAt, healed)
	report(t, "%s %s for %s, healed in %s, every replica in sync %s later", what, victim.name, round(healAt.Sub(faultAt)), round(healed.Sub(healAt)), round(insync))
	report(t, "during the fault: throttled customer %v, bystander %v, /readyz %v (status: count)", during["throttled"], during["bystander"], during["readyz"])
	report(t, "churn: %s", ch.summary())
	ch.verify(t)
}

// mustThrottled returns the customer enforced made, the one traffic sends as throttled.
func (s *stack) mustThrottled(t *testing.T) string {
	t.Helper()
	if s.throttled == "" {
		t.Fatal("no enforced customer: call enforced first")
	}
	return s.throttled
}

// TestLeaderKilled: the broker that leads most throttle partitions is killed (SIGKILL)
// while throttles are set and lifted, and started again after a while: longer than Kafka
// takes to fence it (broker.session.timeout.ms, 4s here) and a writer to learn of the
// new leaders (a second), so that writes must recover while it is still down.
func TestLeaderKilled(t *testing.T) {
	brokerFault(t, "leader-kill", "killed", 12*time.Second,
		func(ctx context.Context, s *stack, b *node) error { return s.kill(ctx, b) },
		func(ctx context.Context, s *stack, b *node) error { return s.start(ctx, b) })
}

// TestBrokerCutOff: the broker that leads most throttle partitions is cut off from the
// network (docker network disconnect) while throttles change, and connected again. Unlike
// a killed broker, a cut-off one answers nothing, not even a reset: a produce request in
// flight to it waits out its write timeout (10s) before the writer looks for the new
// leader, so the cut lasts long enough for that.
func TestBrokerCutOff(t *testing.T) {
	brokerFault(t, "broker-cut", "cut off", 25*time.Second,
		func(ctx context.Context, s *stack, b *node) error { return s.disconnect(ctx, b) },
		func(ctx context.Context, s *stack, b *node) error { return s.reconnect(ctx, b) })
}

// TestRollingRestart: every broker in turn is stopped (SIGTERM, a controlled shutdown)
// and started again, each once all replicas are back in sync, while events flow and
// throttles change.
func TestRollingRestart(t *testing.T) {
	s := newStack(t, "rolling")
	s.requireCluster(t)
	s.waitFleet(t, 2)
	s.enforced(t, uniq("roll-throttled"))
	ch := newChurn(s, uniq("roll"), 60)
	tr := startTraffic(s.bases(t), s.mustThrottled(t), uniq("roll-bystander"))
	stopChurn := ch.start()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	time.Sleep(2 * time.Second)
	began := time.Now()
	for _, b := range s.brokers {
		at := time.Now()
		if err := s.stop(ctx, b, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		stopped := time.Now()
		if err := s.start(ctx, b); err != nil {
			t.Fatal(err)
		}
		started := time.Now()
		insync := s.waitInSync(t, 2*time.Minute)
		report(t, "%s: stopped in %s, started in %s, in sync %s later", b.name, round(stopped.Sub(at)), round(started.Sub(stopped)), round(insync))
	}
	ended := time.Now()
	time.Sleep(time.Second)
	stopChurn()
	tr.halt()
	_, during := tr.check(t, began, ended)
	report(t, "rolling restart of %d brokers in %s: throttled customer %v, bystander %v, /readyz %v (status: count)",
		len(s.brokers), round(ended.Sub(began)), during["throttled"], during["bystander"], during["readyz"])
	if during["bystander"][http.StatusAccepted] == 0 {
		t.Errorf("no bystander event accepted during the rolling restart")
	}
	report(t, "churn: %s", ch.summary())
	ch.verify(t)
}

// TestIngestionCutOff: an ingestion replica loses Kafka (its network to the brokers is
// disconnected; clients still reach it). It keeps enforcing what it knew (fail-static),
// misses what changes meanwhile, and catches up once connected again.
func TestIngestionCutOff(t *testing.T) {
	s := newStack(t, "ingestion-cut")
	s.requireCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// A replica whose published port lives on a network of its own: disconnecting it
	// from the stack's network leaves it reachable from the host.
	front, err := s.frontNetwork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cut, err := s.startIngestionOn(ctx, front)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.ingestion = append(s.ingestion, cut)
	s.mu.Unlock()
	s.waitFleet(t, 3)
	s.enforced(t, uniq("cut-throttled"))
	cutBase := cut.mustURL(t)

	tr := startTraffic([]string{cutBase}, s.mustThrottled(t), uniq("cut-bystander"))
	time.Sleep(time.Second)
	cutAt := time.Now()
	if err := s.disconnect(ctx, cut); err != nil {
		t.Fatal(err)
	}
	// While it is cut off, a throttle is set: the others enforce it, the cut one cannot
	// know it yet.
	late := uniq("cut-late")
	th := s.setThrottle(t, setRequest{Customer: late, Limit: 2, Window: "1h", Duration: "30m"})
	others := []string{}
	for _, b := range s.bases(t) {
		if b != cutBase {
			others = append(others, b)
		}
	}
	waitVisible(t, others, late, th.ID, 30*time.Second)
	time.Sleep(5 * time.Second)
	if _, found, err := replicaThrottle(ctx, cutBase, late); err != nil || found {
		t.Fatalf("the cut-off replica: found %v, %v; want it still unaware of the throttle set meanwhile, and answering", found, err)
	}
	// It says it is not fresh once a request to the brokers has failed: a request into a
	// network that answers nothing fails only at its timeout.
	stale := eventuallyAt(t, 30*time.Second, 100*time.Millisecond, "the cut-off replica says it is not fresh", func(ctx context.Context) (bool, string) {
		v, err := view(ctx, cutBase)
		return err == nil && !v.Fresh, fmt.Sprintf("fresh %v, %v", v.Fresh, err)
	})
	v, err := view(ctx, cutBase)
	if err != nil {
		t.Fatal(err)
	}
	report(t, "cut off: the replica says it is not fresh %s after the cut (ready %v), and keeps answering", round(stale.Sub(cutAt)), v.Ready)
	reconnectAt := time.Now()
	if err := s.reconnect(ctx, cut); err != nil {
		t.Fatal(err)
	}
	seen := waitVisible(t, []string{cutBase}, late, th.ID, time.Minute)
	tr.halt()
	_, during := tr.check(t, cutAt, reconnectAt)
	report(t, "reconnected: the replica shows the throttle set meanwhile %s later", round(seen[0].Sub(reconnectAt)))
	report(t, "while cut off: throttled customer %v, bystander %v, /readyz %v (status: count)", during["throttled"], during["bystander"], during["readyz"])
	eventually(t, 30*time.Second, 100*time.Millisecond, "cut-off replica fresh again", func(ctx context.Context) (bool, string) {
		v, err := view(ctx, cutBase)
		return err == nil && v.Fresh && v.Ready, fmt.Sprintf("fresh %v, ready %v, %v", v.Fresh, v.Ready, err)
	})
	for n := 0; postEvent(ctx, cutBase, late) != http.StatusTooManyRequests; n++ {
		if n > 5 {
			t.Fatalf("the reconnected replica never refused %s", late)
		}
	}
}

// frontNetwork creates a network for a container's published port, named so that it
// sorts before the stack's network: the engine publishes ports through the network whose
// name sorts first, and this one must stay when the stack's is disconnected.
func (s *stack) frontNetwork(ctx context.Context) (string, error) {
	cli, err := docker(ctx)
	if err != nil {
		return "", err
	}
	name := "0-sluice-e2e-front-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(frontSeq.Add(1), 10)
	if _, err := cli.NetworkCreate(ctx, name, client.NetworkCreateOptions{Driver: "bridge", Labels: suiteLabels()}); err != nil {
		return "", fmt.Errorf("create network %s: %w", name, err)
	}
	s.mu.Lock()
	s.extraNets = append(s.extraNets, name)
	s.mu.Unlock()
	return name, nil
}

var frontSeq atomic.Int64

// startIngestionOn starts a ready ingestion replica on front as well as the stack's
// network, with its port published through front.
func (s *stack) startIngestionOn(ctx context.Context, front string) (*node, error) {
	s.mu.Lock()
	s.replicas++
	name := fmt.Sprintf("ingestion-%d", s.replicas)
	s.mu.Unlock()
	n, err := s.run(ctx, name, ingestionPort, "ingestion serving", testcontainers.ContainerRequest{
		Image: s.img.ingestion,
		Env:   withEnv(ingestionEnv(name), s.kafkaEnv()),
		WaitingFor: wait.ForHTTP("/readyz").WithPort(ingestionPort).
			WithPollInterval(50 * time.Millisecond).WithStartupTimeout(2 * time.Minute),
	}, front)
	return n, err
}

// disconnect cuts n off the stack's network.
func (s *stack) disconnect(ctx context.Context, n *node) error {
	cli, err := docker(ctx)
	if err != nil {
		return err
	}
	if _, err := cli.NetworkDisconnect(ctx, s.net.ID, client.NetworkDisconnectOptions{Container: n.c.GetContainerID(), Force: true}); err != nil {
		return fmt.Errorf("disconnect %s: %w", n.name, err)
	}
	return nil
}

// reconnect connects n to the stack's network again, under its alias.
func (s *stack) reconnect(ctx context.Context, n *node) error {
	cli, err := docker(ctx)
	if err != nil {
		return err
	}
	if _, err := cli.NetworkConnect(ctx, s.net.ID, client.NetworkConnectOptions{
		Container: n.c.GetContainerID(), EndpointConfig: &network.EndpointSettings{Aliases: []string{n.name}},
	}); err != nil {
		return fmt.Errorf("reconnect %s: %w", n.name, err)
	}
	return nil
}
