package dispatcher

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/internal/kafkatest"
	"github.com/kafkachannel/kafkachannel/internal/poll"
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
