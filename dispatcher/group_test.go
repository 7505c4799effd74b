package dispatcher

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/environments/poll"
	"github.com/kafkachannel/kafkachannel/internal/kafkabinding"
)

// Two instances in one group share the partitions; one leaves while events flow; every event
// is delivered.
func TestTwoInstancesShareAndOneLeavesMidStream(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 4)
	s := newSink(t, nil)
	sp := sub("uid", 1, s.URL)
	ch := Channel{Subscribers: []v1beta1.SubscriberSpec{sp}}
	d1 := e.start(nil)
	d1.Update(ch)
	d1.waitReady(t, sp)
	d2 := e.start(nil)
	d2.Update(ch)
	d2.waitReady(t, sp)

	var ids []string
	produce := func(rounds int) {
		for r := 0; r < rounds; r++ {
			for p := 0; p < e.parts; p++ {
				ids = append(ids, e.produce(p, 10)...)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	produce(5)
	// Both members get partitions once the rebalance settles.
	poll.Eventually(t, 20*time.Second, "condition", func() error {
		c1, _ := metricValue(t, d1, MetricConsumed, nil)
		c2, _ := metricValue(t, d2, MetricConsumed, nil)
		if c1 == 0 || c2 == 0 {
			produce(1)
			return fmt.Errorf("consumed d1=%v d2=%v", c1, c2)
		}
		return nil
	})
	stopped := make(chan struct{})
	go func() { d2.stop(); close(stopped) }()
	produce(10)
	<-stopped
	produce(5)
	s.waitIDs(t, ids, 30*time.Second)
	got := s.ids()
	dups := 0
	for _, n := range got {
		dups += n - 1
	}
	t.Logf("%d events, %d duplicates", len(ids), dups)
	// A rebalance restarts every partition and redelivers at most its uncommitted in-flight
	// record (ordered delivery: one); two rebalances (the join and the leave), twice over for
	// a final commit that loses the race with the generation's end.
	if limit := 2 * 2 * e.parts; dups > limit {
		t.Errorf("%d duplicates, want at most %d", dups, limit)
	}
}

// An instance that stops without committing (a crash) loses nothing: its successor delivers
// everything from the last committed position.
func TestCrashWithoutCommitLosesNothing(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 2)
	s := newSink(t, nil)
	sp := sub("uid", 1, s.URL)
	ch := Channel{Subscribers: []v1beta1.SubscriberSpec{sp}}
	d1 := e.start(func(c *Config) { c.CommitInterval = time.Hour })
	d1.Update(ch)
	d1.waitReady(t, sp)
	ids := append(e.produce(0, 20), e.produce(1, 20)...)
	s.waitIDs(t, ids, 10*time.Second)
	d1.crashed.Store(true)
	d1.stop()
	if c := e.committed("uid"); c[0] != 0 || c[1] != 0 {
		t.Fatalf("the crashed instance committed %v; the test needs uncommitted deliveries", c)
	}
	ids = append(ids, e.produce(0, 10)...)
	before := s.ids()
	d2 := e.start(nil)
	d2.Update(ch)
	d2.waitReady(t, sp)
	s.waitIDs(t, ids, 20*time.Second)
	// Everything delivered but not committed by the crashed instance comes again.
	poll.Eventually(t, 10*time.Second, "condition", func() error {
		got := s.ids()
		for id := range before {
			if got[id] < 2 {
				return fmt.Errorf("event %s not redelivered", id)
			}
		}
		return nil
	})
}

// A partition added to the topic of a running subscription is read from its beginning: every
// record in it is newer than the subscription.
func TestPartitionAddedIsReadFromItsBeginning(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 1)
	s := newSink(t, nil)
	rd := e.start(func(c *Config) { c.PartitionWatchInterval = 300 * time.Millisecond })
	sp := sub("uid", 1, s.URL)
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sp}})
	rd.waitReady(t, sp)
	ids := e.produce(0, 5)
	res, err := e.client.CreatePartitions(context.Background(), &kafka.CreatePartitionsRequest{
		Topics: []kafka.TopicPartitionsConfig{{Name: e.topic, Count: 2}}})
	if err != nil || res.Errors[e.topic] != nil {
		t.Fatalf("adding a partition: %v %v", err, res)
	}
	e.parts = 2
	// A fresh writer, so it sees the new partition at once.
	w := &kafka.Writer{Addr: kafka.TCP(k.Brokers...), Topic: e.topic, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll,
		Transport: &kafka.Transport{}, Balancer: e.writer.Balancer}
	defer w.Close()
	e.writer = w
	ids = append(ids, e.produce(1, 5)...)
	s.waitIDs(t, ids, 20*time.Second)
}

// Partitions grow while events flow and, as the manager scales replicas with partitions, a new
// replica joins at the same time. Whichever member gets a partition that has no committed
// offset yet, the records the receiver already wrote there are delivered: lost = 0.
func TestPartitionsGrowWithNewReplicaUnderLoadLosesNothing(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 1)
	s := newSink(t, nil)
	sp := sub("uid", 1, s.URL)
	ch := Channel{Subscribers: []v1beta1.SubscriberSpec{sp}}
	// The first replica notices the growth late, so the new replica's join is what brings the
	// new partitions into the group (the race a rollout with added pods runs).
	d1 := e.start(func(c *Config) { c.PartitionWatchInterval = time.Minute })
	d1.Update(ch)
	d1.waitReady(t, sp)

	// Load: a producer that picks up new partitions within a quarter second.
	lw := &kafka.Writer{Addr: kafka.TCP(k.Brokers...), Topic: e.topic, BatchTimeout: time.Millisecond,
		RequiredAcks: kafka.RequireAll, Balancer: &kafka.RoundRobin{}, Transport: &kafka.Transport{MetadataTTL: 250 * time.Millisecond}}
	t.Cleanup(func() { _ = lw.Close() })
	var mu sync.Mutex
	var ids []string
	stop := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			id := fmt.Sprintf("load-%d", i)
			m, err := kafkabinding.ToMessage(testEvent(id, i))
			if err != nil {
				t.Error(err)
				return
			}
			if err := lw.WriteMessages(context.Background(), m); err != nil {
				continue // not acknowledged: not owed to the subscriber
			}
			mu.Lock()
			ids = append(ids, id)
			mu.Unlock()
		}
	}()

	res, err := e.client.CreatePartitions(context.Background(), &kafka.CreatePartitionsRequest{
		Topics: []kafka.TopicPartitionsConfig{{Name: e.topic, Count: 4}}})
	if err != nil || res.Errors[e.topic] != nil {
		t.Fatalf("adding partitions: %v %v", err, res)
	}
	e.parts = 4
	w := &kafka.Writer{Addr: kafka.TCP(k.Brokers...), Topic: e.topic, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll,
		Transport: &kafka.Transport{}, Balancer: e.writer.Balancer}
	t.Cleanup(func() { _ = w.Close() })
	e.writer = w
	// Every new partition holds records before the new replica joins.
	var direct []string
	for p := 1; p < e.parts; p++ {
		direct = append(direct, e.produce(p, 20)...)
	}
	d2 := e.start(nil)
	d2.Update(ch)
	d2.waitReady(t, sp)
	// Both members consume once the rebalance settles; the load keeps flowing meanwhile.
	poll.Eventually(t, 60*time.Second, "both replicas consuming", func() error {
		c1, _ := metricValue(t, d1, MetricConsumed, nil)
		c2, _ := metricValue(t, d2, MetricConsumed, nil)
		if c1 == 0 || c2 == 0 {
			return fmt.Errorf("consumed d1=%v d2=%v", c1, c2)
		}
		return nil
	})
	close(stop)
	<-loadDone
	mu.Lock()
	want := append(append([]string(nil), ids...), direct...)
	mu.Unlock()
	if len(ids) == 0 {
		t.Fatal("the load produced nothing")
	}
	s.waitIDs(t, want, 60*time.Second)
	t.Logf("%d events delivered, none lost", len(want))
}
