package faults

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/apachekafka"
	"github.com/kafkachannel/kafkachannel/environments/envtestbin"
	"github.com/kafkachannel/kafkachannel/environments/localstack"
	"github.com/kafkachannel/kafkachannel/environments/poll"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

// The faults only a real cluster has run on three Apache Kafka brokers (KRaft, each node broker
// and controller, replication factor 3, min.insync.replicas 2) that the local stack starts:
// KAFKA=apache KAFKA_BROKERS=3, e.g. `make test-faults KAFKA=apache KAFKA_BROKERS=3`.

// apacheMode reports whether the suite runs on real Apache Kafka brokers instead of kfake.
func apacheMode() bool { return os.Getenv("KAFKA") == "apache" }

var (
	apacheOnce   sync.Once
	apacheShared *world
	apacheErr    error
)

func getApacheWorld(t *testing.T) *world {
	t.Helper()
	if testing.Short() {
		t.Skip("fault suite: needs kube-apiserver, etcd, the built binaries and Java")
	}
	if !apacheMode() || os.Getenv("KAFKA_BROKERS") != "3" {
		t.Skip("three Apache Kafka brokers: KAFKA=apache KAFKA_BROKERS=3 (make test-faults KAFKA=apache KAFKA_BROKERS=3)")
	}
	if os.Getenv("KAFKA_BOOTSTRAP_SERVERS") != "" {
		t.Skip("fault suite: needs brokers of its own (it kills them)")
	}
	envtestbin.Require(t)
	apacheOnce.Do(func() { apacheShared, apacheErr = startApacheWorld() })
	if apacheErr != nil {
		t.Fatalf("starting the local stack on Apache Kafka: %v", apacheErr)
	}
	return apacheShared
}

func startApacheWorld() (*world, error) {
	dir, err := os.MkdirTemp("", "kafkachannel-faults-apache-")
	if err != nil {
		return nil, err
	}
	w := &world{dir: dir}
	bin, err := buildBinaries(filepath.Join(dir, "bin"))
	if err != nil {
		return nil, err
	}
	o, err := localstack.ApacheOptionsFromEnv()
	if err != nil {
		return nil, err
	}
	log := suiteLogger()
	ctrllog.SetLogger(log)
	w.stack, err = localstack.Start(context.Background(), localstack.Options{
		Dir: filepath.Join(dir, "stack"), BinDir: bin, Log: log, Apache: o,
		ManagerEnv: map[string]string{"TOPIC_DELETE_TIMEOUT": "30s"},
	})
	if err != nil {
		w.stop()
		return nil, err
	}
	return w, nil
}

// apacheChannel creates a channel of three partitions replicated on all three brokers, with
// one subscriber, and waits until both are Ready.
func (w *world) apacheChannel(t *testing.T, name string, s *sink) string {
	t.Helper()
	sub := subscriber(name+"-sub", s)
	ch := &v1beta1.KafkaChannel{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: chNS},
		Spec:       v1beta1.KafkaChannelSpec{NumPartitions: 3, ReplicationFactor: 3, Subscribers: []v1beta1.SubscriberSpec{sub}},
	}
	if err := w.stack.Client.Create(context.Background(), ch); err != nil {
		t.Fatalf("creating channel %s: %v", name, err)
	}
	t.Cleanup(func() { _ = w.stack.Client.Delete(context.Background(), ch) })
	w.waitReady(t, name, sub.UID)
	return fmt.Sprintf("%s/%s/%s", w.stack.ReceiverURL, chNS, name)
}

// partitions asks the first node that answers (skipping skip, -1 for none) for topic's
// partitions, over a fresh connection: kafka-go's Transport caches metadata for seconds.
func partitions(ctx context.Context, c *apachekafka.Cluster, topic string, skip int) ([]kafka.Partition, error) {
	var last error
	for i, addr := range c.Brokers() {
		if i == skip || c.PID(i) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		tr := &kafka.Transport{}
		md, err := (&kafka.Client{Addr: kafka.TCP(addr), Transport: tr}).Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		tr.CloseIdleConnections()
		cancel()
		if err != nil {
			last = err
			continue
		}
		for _, tp := range md.Topics {
			if tp.Name == topic && tp.Error == nil {
				return tp.Partitions, nil
			}
			if tp.Name == topic {
				last = tp.Error
			}
		}
	}
	return nil, fmt.Errorf("metadata of %s: %w", topic, last)
}

// leaderOf is the node index leading partition p of topic.
func leaderOf(t *testing.T, c *apachekafka.Cluster, topic string, p int) int {
	t.Helper()
	var leader int
	poll.Eventually(t, time.Minute, fmt.Sprintf("the leader of %s/%d", topic, p), func() error {
		ps, err := partitions(context.Background(), c, topic, -1)
		if err != nil {
			return err
		}
		for _, part := range ps {
			if part.ID == p && part.Leader.ID > 0 {
				leader = part.Leader.ID - 1
				return nil
			}
		}
		return fmt.Errorf("no leader for partition %d in %+v", p, ps)
	})
	return leader
}

// ledBy counts the partitions of topic node i leads.
func ledBy(c *apachekafka.Cluster, topic string, i int) int {
	ps, err := partitions(context.Background(), c, topic, -1)
	if err != nil {
		return -1
	}
	n := 0
	for _, p := range ps {
		if p.Leader.ID == i+1 {
			n++
		}
	}
	return n
}

// waitInSync waits until every partition of topic has a leader and all three replicas in sync.
func waitInSync(t *testing.T, c *apachekafka.Cluster, topic string) {
	t.Helper()
	poll.Eventually(t, 3*time.Minute, "every partition of "+topic+" with 3 replicas in sync", func() error {
		ps, err := partitions(context.Background(), c, topic, -1)
		if err != nil {
			return err
		}
		for _, p := range ps {
			if p.Leader.ID <= 0 || len(p.Isr) != 3 {
				return fmt.Errorf("partition %d: leader %d, in sync %d of 3", p.ID, p.Leader.ID, len(p.Isr))
			}
		}
		return nil
	})
}

// recovery is how long a fault interrupted the flow: the longest stretches without a 202 (the
// receiver) and without a first delivery at the subscriber (the dispatcher).
type recovery struct {
	acks, deliveries time.Duration
}

// lag is how much longer the subscriber waited than the senders.
func (r recovery) lag() time.Duration { return r.deliveries - r.acks }

// maxDeliveryLag is how much longer than the receiver the dispatcher may take to come back
// after a fault: it follows a moved partition leader and group coordinator as the receiver's
// writer follows the leader (docs/reliability.md, "Three Apache Kafka brokers").
const maxDeliveryLag = 2 * time.Second

// checkDeliveryRecovery fails a scenario whose deliveries resumed more than maxDeliveryLag
// after the 202s did.
func checkDeliveryRecovery(r recovery) error {
	if r.lag() > maxDeliveryLag {
		return fmt.Errorf("the subscriber went %s without a delivery, %s longer than the longest gap without a 202 (%s); at most %s longer is expected: the dispatcher followed the moved leader or group coordinator late",
			r.deliveries.Round(100*time.Millisecond), r.lag().Round(100*time.Millisecond), r.acks.Round(100*time.Millisecond), maxDeliveryLag)
	}
	return nil
}

// gaps measures the recovery in [from, to] from the answers and the sink's first deliveries.
func gaps(as []answer, s *sink, from, to time.Time) recovery {
	in := func(x time.Time) bool { return !x.Before(from) && !x.After(to) }
	var acks, deliveries []time.Time
	for _, a := range as {
		if a.code == http.StatusAccepted && in(a.end) {
			acks = append(acks, a.end)
		}
	}
	s.mu.Lock()
	for _, at := range s.at {
		if in(at) {
			deliveries = append(deliveries, at)
		}
	}
	s.mu.Unlock()
	return recovery{acks: longestGap(acks, from, to), deliveries: longestGap(deliveries, from, to)}
}

// longestGap is the longest stretch in [from, to] between two of ts (or an end of the span).
func longestGap(ts []time.Time, from, to time.Time) time.Duration {
	ts = append(slices.Clone(ts), from, to)
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	var m time.Duration
	for i := 1; i < len(ts); i++ {
		m = max(m, ts[i].Sub(ts[i-1]))
	}
	return m
}

// coordinatorOf is the node index coordinating group, or -1 when no node answers.
func coordinatorOf(ctx context.Context, c *apachekafka.Cluster, group string) int {
	for i, addr := range c.Brokers() {
		if c.PID(i) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		tr := &kafka.Transport{}
		res, err := (&kafka.Client{Addr: kafka.TCP(addr), Transport: tr}).FindCoordinator(ctx, &kafka.FindCoordinatorRequest{Key: group})
		tr.CloseIdleConnections()
		cancel()
		if err == nil && res.Error == nil && res.Coordinator != nil {
			return res.Coordinator.NodeID - 1
		}
	}
	return -1
}

// apacheScenario runs fault under a steady flow into a new channel, waits until the cluster
// is whole again and the flow goes on, then checks that every 202 was delivered and that no
// data-plane process restarted. fault returns what it observed, for the table's notes.
func apacheScenario(t *testing.T, name, scenario string, fault func(t *testing.T, c *apachekafka.Cluster, topic string) string) []answer {
	t.Helper()
	w := getApacheWorld(t)
	c := w.stack.Apache
	s := newSink(t)
	url := w.apacheChannel(t, name, s)
	topic := naming.Topic(chNS, name)
	waitInSync(t, c, topic)
	// Four senders: while a partition has no leader, each request waits up to the receiver's
	// produce timeout, and the others keep the load on.
	f := startFlow(url, name, 4, 10*time.Millisecond)
	f.waitAccepted(t, 200)
	coord := coordinatorOf(context.Background(), c, naming.GroupID(chNS, name, name+"-sub"))
	before := w.restarts()
	from := time.Now()
	notes := fault(t, c, topic)
	waitInSync(t, c, topic)
	f.waitAccepted(t, 200)
	to := time.Now()
	as := f.end()
	checkNoRestart(t, w, before)
	r := waitDelivered(t, scenario, acceptedIDs(as), s)
	// Every scenario stops at most three brokers, and each stop restarts the readers.
	if maxDups := 3 * dupsPerReaderRestart; r.Duplicates > maxDups {
		t.Errorf("%s: %d duplicates, want at most %d", scenario, r.Duplicates, maxDups)
	}
	r.Kafka = c.Version()
	rec := gaps(as, s, from, to)
	r.AckGap, r.DeliveryGap = rec.acks, rec.deliveries
	r.Notes = fmt.Sprintf("%s; the subscriber's group coordinated by node %d before the fault; %s", notes, coord+1, codes(as))
	if err := checkDeliveryRecovery(rec); err != nil {
		t.Errorf("%s: %v", scenario, err)
	}
	report(t, r)
	return as
}

// TestApacheLeaderKilled SIGKILLs the broker leading partition 0 of the channel's topic under
// load and restarts it: another replica takes over, the restarted one catches up.
func TestApacheLeaderKilled(t *testing.T) {
	apacheScenario(t, "leader", "partition leader's broker SIGKILLed, restarted", func(t *testing.T, c *apachekafka.Cluster, topic string) string {
		leader := leaderOf(t, c, topic, 0)
		led := ledBy(c, topic, leader)
		killed := time.Now()
		if err := c.Kill(leader); err != nil {
			t.Fatal(err)
		}
		poll.Eventually(t, 2*time.Minute, "a new leader of partition 0", func() error {
			ps, err := partitions(context.Background(), c, topic, leader)
			if err != nil {
				return err
			}
			for _, p := range ps {
				if p.ID == 0 && p.Leader.ID > 0 && p.Leader.ID != leader+1 {
					return nil
				}
			}
			return fmt.Errorf("partition 0 still led by node %d", leader+1)
		})
		elected := time.Since(killed)
		if err := c.Restart(context.Background(), leader); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("node %d (leading %d of 3 partitions) killed; new leader of partition 0 seen after %s; node back after %s",
			leader+1, led, elected.Round(100*time.Millisecond), time.Since(killed).Round(100*time.Millisecond))
	})
}

// TestApacheRollingRestart stops (SIGTERM: controlled shutdown) and restarts each broker in
// turn under load, waiting until every replica is in sync again before the next, as an
// operator upgrading a cluster does.
func TestApacheRollingRestart(t *testing.T) {
	apacheScenario(t, "rolling", "rolling restart of all three brokers (SIGTERM, restart, in sync, next)", func(t *testing.T, c *apachekafka.Cluster, topic string) string {
		start := time.Now()
		for i := range 3 {
			if err := c.Stop(i, time.Minute); err != nil {
				t.Fatal(err)
			}
			if err := c.Restart(context.Background(), i); err != nil {
				t.Fatal(err)
			}
			waitInSync(t, c, topic)
		}
		return fmt.Sprintf("three restarts took %s", time.Since(start).Round(100*time.Millisecond))
	})
}

// TestApachePartitionedBroker cuts the broker leading partition 0 off for longer than the
// broker session timeout (9 s) and the consumer session timeout (10 s): SIGSTOP freezes its
// JVM, so its sockets stay open and nothing answers, as when a network drops every packet (a
// reset connection would be easier on clients). It resumes with SIGCONT.
func TestApachePartitionedBroker(t *testing.T) {
	apacheScenario(t, "partition", "partition leader's broker cut off 20 s (SIGSTOP, then SIGCONT)", func(t *testing.T, c *apachekafka.Cluster, topic string) string {
		leader := leaderOf(t, c, topic, 0)
		led := ledBy(c, topic, leader)
		paused := time.Now()
		if err := c.Pause(leader); err != nil {
			t.Fatal(err)
		}
		resumed := false
		defer func() {
			if !resumed {
				_ = c.Resume(leader)
			}
		}()
		var elected time.Duration
		poll.Eventually(t, 2*time.Minute, "a new leader of partition 0 while the old one is cut off", func() error {
			ps, err := partitions(context.Background(), c, topic, leader)
			if err != nil {
				return err
			}
			for _, p := range ps {
				if p.ID == 0 && p.Leader.ID > 0 && p.Leader.ID != leader+1 {
					elected = time.Since(paused)
					return nil
				}
			}
			return fmt.Errorf("partition 0 still led by node %d", leader+1)
		})
		time.Sleep(time.Until(paused.Add(20 * time.Second))) // the length of the cut, not an assertion
		if err := c.Resume(leader); err != nil {
			t.Fatal(err)
		}
		resumed = true
		return fmt.Sprintf("node %d (leading %d of 3 partitions) frozen 20 s; new leader of partition 0 seen after %s",
			leader+1, led, elected.Round(100*time.Millisecond))
	})
}

// TestApacheControllerKilled SIGKILLs the active KRaft controller under load and restarts it.
func TestApacheControllerKilled(t *testing.T) {
	apacheScenario(t, "controller", "active controller SIGKILLed, restarted", func(t *testing.T, c *apachekafka.Cluster, topic string) string {
		ctx := context.Background()
		ctrl, err := c.ActiveController(ctx)
		if err != nil {
			t.Fatal(err)
		}
		led := ledBy(c, topic, ctrl)
		killed := time.Now()
		if err := c.Kill(ctrl); err != nil {
			t.Fatal(err)
		}
		var next int
		poll.Eventually(t, 2*time.Minute, "a new active controller", func() error {
			n, err := c.ActiveController(ctx)
			if err != nil {
				return err
			}
			if n == ctrl {
				return fmt.Errorf("node %d still named the leader", ctrl+1)
			}
			next = n
			return nil
		})
		elected := time.Since(killed)
		if err := c.Restart(ctx, ctrl); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("node %d (controller, leading %d of 3 partitions) killed; node %d named controller within %s (kafka-metadata-quorum, itself a JVM start)",
			ctrl+1, led, next+1, elected.Round(100*time.Millisecond))
	})
}

// TestApacheCoordinatorKilled SIGKILLs the broker coordinating the subscriber's consumer group
// under load and restarts it: the group must find its new coordinator and rejoin about as fast
// as the receiver follows the partitions' new leaders. The other kills hit the coordinator
// only by chance.
func TestApacheCoordinatorKilled(t *testing.T) {
	const name = "coordinator"
	apacheScenario(t, name, "consumer group coordinator's broker SIGKILLed, restarted", func(t *testing.T, c *apachekafka.Cluster, topic string) string {
		ctx := context.Background()
		group := naming.GroupID(chNS, name, name+"-sub")
		coord := coordinatorOf(ctx, c, group)
		if coord < 0 {
			t.Fatalf("no node names the coordinator of %s", group)
		}
		led := ledBy(c, topic, coord)
		killed := time.Now()
		if err := c.Kill(coord); err != nil {
			t.Fatal(err)
		}
		var next int
		poll.Eventually(t, 2*time.Minute, "another node coordinating "+group, func() error {
			next = coordinatorOf(ctx, c, group)
			if next < 0 || next == coord {
				return fmt.Errorf("coordinator: node %d", next+1)
			}
			return nil
		})
		elected := time.Since(killed)
		if err := c.Restart(ctx, coord); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("node %d (group coordinator, leading %d of 3 partitions) killed; node %d named coordinator after %s",
			coord+1, led, next+1, elected.Round(100*time.Millisecond))
	})
}

// TestApacheMinISRUnmet kills two of the three brokers for 25 s: with one replica left no
// write can reach min.insync.replicas (2), so every answer the receiver gives meanwhile must be
// 503, never 202. Both come back and the flow goes on. One of the two is the subscriber's group
// coordinator: with the controller quorum lost too, no other broker can take the group over
// until a killed node is back, the hardest case for delivery (carry.go).
func TestApacheMinISRUnmet(t *testing.T) {
	const name = "minisr"
	var down, up time.Time
	as := apacheScenario(t, name, "two of three brokers SIGKILLed for 25 s (below min.insync.replicas), one the group coordinator", func(t *testing.T, c *apachekafka.Cluster, topic string) string {
		group := naming.GroupID(chNS, name, name+"-sub")
		coord := coordinatorOf(context.Background(), c, group)
		if coord < 0 {
			t.Fatalf("no node names the coordinator of %s", group)
		}
		killed := []int{coord, (coord + 1) % 3}
		down = time.Now()
		var wg sync.WaitGroup
		for _, i := range killed {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = c.Kill(i)
			}()
		}
		wg.Wait()
		time.Sleep(time.Until(down.Add(25 * time.Second))) // the length of the outage, not an assertion
		up = time.Now()
		// Each restarted node is ready once it sees all three brokers, so both start together.
		errs := make(chan error, 2)
		for _, i := range killed {
			go func() { errs <- c.Restart(context.Background(), i) }()
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		return fmt.Sprintf("nodes %d (group coordinator) and %d killed; back after %s", killed[0]+1, killed[1]+1, time.Since(down).Round(100*time.Millisecond))
	})
	if t.Failed() || down.IsZero() {
		return
	}
	// Kills are sent at `down`; the answers to requests that started later and ended before
	// the brokers restarted could not have been acked by two replicas.
	checkOutage(t, as, down, up)
	n503, n := 0, 0
	for _, a := range as {
		if a.start.After(down.Add(50*time.Millisecond)) && a.end.Before(up) {
			n++
			if a.code == http.StatusServiceUnavailable {
				n503++
			}
		}
	}
	t.Logf("while below min.insync.replicas: %d of %d answers 503", n503, n)
	if n == 0 {
		t.Errorf("no request was answered while two brokers were down: the 503 check checked nothing")
	}
	resultsMu.Lock()
	results[len(results)-1].Notes = fmt.Sprintf("while below min ISR: %d of %d answers 503, 0 202; %s", n503, n, results[len(results)-1].Notes)
	resultsMu.Unlock()
}
