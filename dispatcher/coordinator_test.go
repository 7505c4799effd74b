package dispatcher

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/environments/poll"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

// When the group coordinator's broker dies, kafka-go's group loses its heartbeat connection,
// cannot reach the coordinator until another broker takes over, and on that error drops its
// member id: it joins again as a new member while the coordinator still counts the old one, and
// the join waits for that member to rejoin or time out (session or rebalance timeout, 40 s
// here). The member's process knows its old id, so delivery must resume as soon as the
// coordinator answers again, not when the old member times out.
func TestCoordinatorLostRejoinsWithoutWaitingForTheOldMember(t *testing.T) {
	if kafkatest.External() {
		t.Skip("injects faults into the in-process broker")
	}
	if testing.Short() {
		t.Skip("waits for a rejoin")
	}
	k := kafkatest.Start(t)
	e := newEnv(t, k, 2)
	s := newSink(t, nil)
	// Both timeouts far longer than the deadline below: only leaving the old member in time
	// lets the rejoin finish within it.
	rd := e.start(func(c *Config) {
		c.SessionTimeout = 40 * time.Second
		c.RebalanceTimeout = 40 * time.Second
	})
	sp := sub("uid", 1, s.URL)
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sp}})
	rd.waitReady(t, sp)
	ids := append(e.produce(0, 5), e.produce(1, 5)...)
	s.waitIDs(t, ids, 10*time.Second)
	group := map[string]string{"consumer": naming.GroupID(testNS, e.name, sp.UID)}
	gensBefore, _ := metricValue(t, rd, MetricGenerations, group)

	// The coordinator "dies": the next heartbeat's connection is closed, and for the next 2 s no
	// broker names a reachable coordinator (the window before another broker takes over).
	var lostAt atomic.Int64
	k.Cluster.ControlKey(int16(kmsg.FindCoordinator), func(kmsg.Request) (kmsg.Response, error, bool) {
		k.Cluster.KeepControl()
		at := lostAt.Load()
		if at != 0 && time.Since(time.Unix(0, at)) < 2*time.Second {
			return nil, errors.New("coordinator unreachable"), true
		}
		return nil, nil, false
	})
	k.Cluster.ControlKey(int16(kmsg.Heartbeat), func(kmsg.Request) (kmsg.Response, error, bool) {
		lostAt.Store(time.Now().UnixNano())
		return nil, errors.New("coordinator died"), true
	})

	poll.Eventually(t, 10*time.Second, "a heartbeat refused", func() error {
		if lostAt.Load() == 0 {
			return errors.New("no heartbeat yet")
		}
		return nil
	})

	// Delivery resumes in a new generation, long before the old member's 40 s run out.
	ids = append(ids, e.produce(0, 5)...)
	ids = append(ids, e.produce(1, 5)...)
	s.waitIDs(t, ids, 15*time.Second)
	if gens, _ := metricValue(t, rd, MetricGenerations, group); gens <= gensBefore {
		t.Fatalf("delivered without a new generation (%v -> %v): the fault did not end the generation", gensBefore, gens)
	}
}
