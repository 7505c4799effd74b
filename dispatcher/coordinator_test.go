package dispatcher

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/twmb/franz-go/pkg/kerr"
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
	skipUnlessInProcessLong(t, "injects faults into the in-process broker", "waits for a rejoin")
	k := kafkatest.Start(t)
	// Both timeouts far longer than the deadline below: only leaving the old member in time
	// lets the rejoin finish within it.
	r := startCoordinatorRun(t, k, 40*time.Second)

	// The coordinator "dies": heartbeats' connections are closed, and for the next 2 s no broker
	// names a reachable coordinator (the window before another broker takes over).
	waitRefused(t, loseCoordinator(k, 2*time.Second, 2*time.Second, nil))

	// A new generation, long before the old member's 40 s run out (the partitions are carried
	// meanwhile, so delivering alone would not show it), and delivery in it.
	r.waitNewGeneration(t)
	r.ids = append(r.ids, r.e.produce(0, 5)...)
	r.ids = append(r.ids, r.e.produce(1, 5)...)
	r.s.waitIDs(t, r.ids, 10*time.Second)
}

// coordinatorRun is one subscriber of a two-partition channel that has delivered its first
// events, with the group's generation count at that point.
type coordinatorRun struct {
	e          *env
	s          *sink
	rd         *runningDispatcher
	group      map[string]string
	gensBefore float64
	ids        []string
}

// startCoordinatorRun starts a dispatcher whose session and rebalance timeouts are timeout
// (opts change its Config further) and waits until its subscriber delivers.
func startCoordinatorRun(t *testing.T, k *kafkatest.Kafka, timeout time.Duration, opts ...func(*Config)) *coordinatorRun {
	t.Helper()
	r := &coordinatorRun{e: newEnv(t, k, 2), s: newSink(t, nil)}
	r.rd = r.e.start(func(c *Config) {
		c.SessionTimeout = timeout
		c.RebalanceTimeout = timeout
		for _, o := range opts {
			o(c)
		}
	})
	sp := sub("uid", 1, r.s.URL)
	r.rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sp}})
	r.rd.waitReady(t, sp)
	r.ids = append(r.e.produce(0, 5), r.e.produce(1, 5)...)
	r.s.waitIDs(t, r.ids, 10*time.Second)
	r.group = map[string]string{"consumer": naming.GroupID(testNS, r.e.name, sp.UID)}
	r.gensBefore, _ = metricValue(t, r.rd, MetricGenerations, r.group)
	return r
}

// waitNewGeneration waits until the group has joined a generation after the first.
func (r *coordinatorRun) waitNewGeneration(t *testing.T) {
	t.Helper()
	poll.Eventually(t, 15*time.Second, "a new generation", func() error {
		if gens, _ := metricValue(t, r.rd, MetricGenerations, r.group); gens <= r.gensBefore {
			return fmt.Errorf("generations %v, want more than %v", gens, r.gensBefore)
		}
		return nil
	})
}

// waitRefused waits until loseCoordinator has refused a heartbeat.
func waitRefused(t *testing.T, lost *atomic.Int64) {
	t.Helper()
	poll.Eventually(t, 10*time.Second, "a heartbeat refused", func() error {
		if lost.Load() == 0 {
			return errors.New("no heartbeat yet")
		}
		return nil
	})
}

// loseCoordinator makes the group coordinator unavailable from the next heartbeat on: for
// findFor no broker names a coordinator (FindCoordinator's connection is closed), and for
// beatFor heartbeats' connections are closed, all of them or, with victim, only those of the
// member victim picks (it is given each heartbeat's member id, the first call deciding). It
// returns when the outage began (UnixNano, 0 until the first heartbeat).
func loseCoordinator(k *kafkatest.Kafka, findFor, beatFor time.Duration, victim func(member string) bool) *atomic.Int64 {
	var lostAt atomic.Int64
	within := func(d time.Duration) bool {
		at := lostAt.Load()
		return at != 0 && time.Since(time.Unix(0, at)) < d
	}
	k.Cluster.ControlKey(int16(kmsg.FindCoordinator), func(kmsg.Request) (kmsg.Response, error, bool) {
		k.Cluster.KeepControl()
		if within(findFor) {
			return nil, errors.New("coordinator unreachable"), true
		}
		return nil, nil, false
	})
	var mu sync.Mutex
	picked := ""
	k.Cluster.ControlKey(int16(kmsg.Heartbeat), func(r kmsg.Request) (kmsg.Response, error, bool) {
		k.Cluster.KeepControl()
		member := r.(*kmsg.HeartbeatRequest).MemberID
		mu.Lock()
		defer mu.Unlock()
		if victim != nil {
			if picked == "" && victim(member) {
				picked = member
			}
			if member != picked {
				return nil, nil, false
			}
		}
		lostAt.CompareAndSwap(0, time.Now().UnixNano())
		if within(beatFor) {
			return nil, errors.New("coordinator died"), true
		}
		return nil, nil, false
	})
	return &lostAt
}

// While no coordinator answers, the partitions' leaders are alive and events keep coming:
// the member goes on delivering them (carry.go) instead of waiting for the group to rejoin.
func TestCoordinatorUnknownKeepsDelivering(t *testing.T) {
	skipUnlessInProcessLong(t, "injects faults into the in-process broker", "waits through a coordinator outage")
	k := kafkatest.Start(t)
	// The session and rebalance timeouts bound carrying (29 s here), well past the outage.
	r := startCoordinatorRun(t, k, 30*time.Second)
	e, s, rd, group, gensBefore, ids := r.e, r.s, r.rd, r.group, r.gensBefore, r.ids

	const outage = 12 * time.Second
	lost := loseCoordinator(k, outage, outage, nil)
	waitRefused(t, lost)
	// kafka-go has ended the generation by now (its heartbeat failed).
	time.Sleep(500 * time.Millisecond)
	during := append(e.produce(0, 10), e.produce(1, 10)...)
	if left := outage - time.Since(time.Unix(0, lost.Load())) - time.Second; left > 0 {
		s.waitIDs(t, during, left)
	} else {
		t.Fatal("the machine is too slow to produce within the outage")
	}
	if c, _ := metricValue(t, rd, MetricCarries, group); c < 1 {
		t.Errorf("%s = %v, want at least 1", MetricCarries, c)
	}
	if gens, _ := metricValue(t, rd, MetricGenerations, group); gens != gensBefore {
		t.Errorf("a new generation (%v -> %v) during the outage: nothing answered for the group", gensBefore, gens)
	}

	// After the outage the group joins again and goes on.
	ids = append(ids, during...)
	ids = append(ids, e.produce(0, 5)...)
	ids = append(ids, e.produce(1, 5)...)
	s.waitIDs(t, ids, outage+15*time.Second)
	r.waitNewGeneration(t)
	// What was delivered while carried is committed (in the old generation, or at the start
	// of the new one), not delivered again.
	got := s.ids()
	for _, id := range during {
		if got[id] > 1 {
			t.Errorf("%s delivered %d times: carried offsets were not committed", id, got[id])
		}
	}
}

// delivery is one delivery seen by the subscriber: who made it, of which partition, when.
type delivery struct {
	member     string
	partition  string
	start, end time.Time
}

// deliveryLog is a subscriber that records the span of each delivery per member (the path of
// the URL each member was given).
type deliveryLog struct {
	mu   sync.Mutex
	all  []delivery
	seen map[string]bool
}

func (l *deliveryLog) serve(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ev, err := binding.ToEvent(r.Context(), cehttp.NewMessageFromHttpRequest(r))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	// Long enough for deliveries to overlap if two members deliver a partition at once.
	time.Sleep(20 * time.Millisecond)
	part, _, _ := strings.Cut(ev.ID(), "-")
	l.mu.Lock()
	l.all = append(l.all, delivery{member: r.URL.Path, partition: part, start: start, end: time.Now()})
	l.seen[ev.ID()] = true
	l.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
}

// overlap returns a partition's deliveries by two members at once, if any.
func (l *deliveryLog) overlap() (delivery, delivery, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, a := range l.all {
		for _, b := range l.all[i+1:] {
			if a.partition == b.partition && a.member != b.member && a.start.Before(b.end) && b.start.Before(a.end) {
				return a, b, true
			}
		}
	}
	return delivery{}, delivery{}, false
}

func (l *deliveryLog) missing(ids []string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, id := range ids {
		if !l.seen[id] {
			n++
		}
	}
	return n
}

// A member carries its partitions only while no other member can own them: when its
// coordinator stays unreachable for it past its session, the group moves its partitions to
// the other member, and an ordered channel must never have two members delivering one
// partition at the same time.
func TestCoordinatorUnknownOrderedNeverTwoDeliverers(t *testing.T) {
	skipUnlessInProcessLong(t, "injects faults into the in-process broker", "waits through a coordinator outage")
	k := kafkatest.Start(t)
	e := newEnv(t, k, 2)
	log := &deliveryLog{seen: map[string]bool{}}
	srv := httptest.NewServer(http.HandlerFunc(log.serve))
	t.Cleanup(srv.Close)
	// One group (the uid), a URL per member so the subscriber tells them apart.
	spA, spB := sub("uid", 1, srv.URL+"/a"), sub("uid", 1, srv.URL+"/b")
	a, b := e.start(nil), e.start(nil) // session and rebalance timeouts 6 s
	a.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{spA}})
	a.waitReady(t, spA)
	b.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{spB}})
	b.waitReady(t, spB)

	var ids []string
	var idsMu sync.Mutex
	stop := make(chan struct{})
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			batch := append(e.produce(0, 1), e.produce(1, 1)...)
			idsMu.Lock()
			ids = append(ids, batch...)
			idsMu.Unlock()
		}
	}()
	// Both members own a partition before the fault.
	poll.Eventually(t, 30*time.Second, "both members delivering", func() error {
		log.mu.Lock()
		defer log.mu.Unlock()
		members := map[string]bool{}
		for _, d := range log.all {
			members[d.member] = true
		}
		if len(members) < 2 {
			return fmt.Errorf("deliveries by %v", members)
		}
		return nil
	})

	// No broker names a coordinator for 9 s (longer than the 6 s session); one member's
	// heartbeats fail for 3 s more, so it still sees no coordinator when the other has taken
	// its partition over.
	const findFor, beatFor = 9 * time.Second, 12 * time.Second
	waitRefused(t, loseCoordinator(k, findFor, beatFor, func(string) bool { return true }))
	time.Sleep(beatFor + 5*time.Second)
	close(stop)
	<-produced

	idsMu.Lock()
	all := append([]string(nil), ids...)
	idsMu.Unlock()
	poll.Eventually(t, 30*time.Second, "every event delivered", func() error {
		if n := log.missing(all); n > 0 {
			return fmt.Errorf("%d of %d events missing", n, len(all))
		}
		return nil
	})
	carriedA, _ := metricValue(t, a, MetricCarries, nil)
	carriedB, _ := metricValue(t, b, MetricCarries, nil)
	if carriedA+carriedB < 1 {
		t.Errorf("no member carried its partition: the fault did not leave one without a coordinator")
	}
	if x, y, ok := log.overlap(); ok {
		t.Fatalf("partition %s delivered by two members at once: %s %s-%s and %s %s-%s", x.partition,
			x.member, x.start.Format("15:04:05.000"), x.end.Format("15:04:05.000"),
			y.member, y.start.Format("15:04:05.000"), y.end.Format("15:04:05.000"))
	}
}

// A new coordinator still loading the group answers COORDINATOR_LOAD_IN_PROGRESS; once loaded
// it starts every member's session afresh, so the member may carry on past the bound counted
// from its last answered heartbeat (carry.go). Here every heartbeat is answered so for 10 s,
// twice the 5 s bound of the 6 s session.
func TestCoordinatorLoadingExtendsTheCarry(t *testing.T) {
	skipUnlessInProcessLong(t, "injects faults into the in-process broker", "waits through a coordinator outage")
	k := kafkatest.Start(t)
	e := newEnv(t, k, 2)
	s := newSink(t, nil)
	rd := e.start(nil) // session and rebalance timeouts 6 s: the bound is 5 s
	sp := sub("uid", 1, s.URL)
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sp}})
	rd.waitReady(t, sp)
	s.waitIDs(t, append(e.produce(0, 5), e.produce(1, 5)...), 10*time.Second)

	const loading = 10 * time.Second
	var loadingSince atomic.Int64
	k.Cluster.ControlKey(int16(kmsg.Heartbeat), func(r kmsg.Request) (kmsg.Response, error, bool) {
		k.Cluster.KeepControl()
		loadingSince.CompareAndSwap(0, time.Now().UnixNano())
		if time.Since(time.Unix(0, loadingSince.Load())) >= loading {
			return nil, nil, false
		}
		res := r.(*kmsg.HeartbeatRequest).ResponseKind().(*kmsg.HeartbeatResponse)
		res.ErrorCode = kerr.CoordinatorLoadInProgress.Code
		return res, nil, true
	})
	poll.Eventually(t, 10*time.Second, "a heartbeat answered", func() error {
		if loadingSince.Load() == 0 {
			return errors.New("no heartbeat yet")
		}
		return nil
	})
	// Past the 5 s bound, still inside the load: delivered while carried.
	time.Sleep(6500 * time.Millisecond)
	deliveredWithin(t, e, s, time.Unix(0, loadingSince.Load()), loading, "load")
	if c, _ := metricValue(t, rd, MetricCarries, nil); c < 1 {
		t.Errorf("%s = %v, want at least 1", MetricCarries, c)
	}
}

// When the coordinator's broker dies with the controller quorum (two of three brokers), the
// surviving brokers go on naming it as the group's coordinator until the quorum is back, and
// its address refuses connections: no process holds the group's sessions, so the member
// carries on past the bound counted from its last answered heartbeat (carry.go). Here for
// 10 s, twice the 5 s bound of the 6 s session.
func TestCoordinatorRefusingExtendsTheCarry(t *testing.T) {
	skipUnlessInProcessLong(t, "injects faults into the in-process broker", "waits through a coordinator outage")
	k := kafkatest.Start(t)
	r := startCoordinatorRun(t, k, 6*time.Second) // the bound is 5 s
	e, s, rd := r.e, r.s, r.rd

	const down = 10 * time.Second
	host, port := refusingAddress(t)
	lost := loseCoordinator(k, 0, down, nil)
	named := namedCoordinator(k, lost, down, host, port)
	waitRefused(t, lost)
	// Past the 5 s bound, still inside the outage: delivered while carried.
	time.Sleep(6500 * time.Millisecond)
	late := deliveredWithin(t, e, s, time.Unix(0, lost.Load()), down, "outage")
	if named.Load() == 0 {
		t.Fatal("no lookup was answered with the dead coordinator: the fault did not happen")
	}
	if c, _ := metricValue(t, rd, MetricCarries, r.group); c < 1 {
		t.Errorf("%s = %v, want at least 1", MetricCarries, c)
	}
	// Once the coordinator answers again (it timed the member out meanwhile), the group joins
	// again and delivers on.
	r.ids = append(r.ids, late...)
	r.ids = append(r.ids, e.produce(0, 5)...)
	r.ids = append(r.ids, e.produce(1, 5)...)
	s.waitIDs(t, r.ids, 30*time.Second)
	r.waitNewGeneration(t)
}

// With the limit negative, a refusing coordinator moves nothing: carrying ends at the bound.
func TestCoordinatorRefusingCarryLimitNegative(t *testing.T) {
	skipUnlessInProcessLong(t, "injects faults into the in-process broker", "waits through a coordinator outage")
	k := kafkatest.Start(t)
	r := startCoordinatorRun(t, k, 6*time.Second, func(c *Config) { c.CarryWhileCoordinatorDown = -1 })

	const down = 12 * time.Second
	host, port := refusingAddress(t)
	lost := loseCoordinator(k, 0, down, nil)
	namedCoordinator(k, lost, down, host, port)
	waitRefused(t, lost)
	time.Sleep(7 * time.Second)
	late := append(r.e.produce(0, 5), r.e.produce(1, 5)...)
	time.Sleep(down - time.Since(time.Unix(0, lost.Load())) - 500*time.Millisecond)
	got := r.s.ids()
	for _, id := range late {
		if got[id] > 0 {
			t.Fatalf("%s delivered during the outage past the bound, with carrying past it turned off", id)
		}
	}
	r.s.waitIDs(t, late, 30*time.Second)
}

// deliveredWithin produces five events to each partition and waits until the subscriber has
// them, no later than 500 ms before the end of the fault (what) that began at since and lasts.
func deliveredWithin(t *testing.T, e *env, s *sink, since time.Time, lasts time.Duration, what string) []string {
	t.Helper()
	ids := append(e.produce(0, 5), e.produce(1, 5)...)
	left := lasts - time.Since(since) - 500*time.Millisecond
	if left <= 0 {
		t.Fatalf("the machine is too slow to produce within the %s", what)
	}
	s.waitIDs(t, ids, left)
	return ids
}

// refusingAddress is an address on which nothing listens: connections to it are refused.
func refusingAddress(t *testing.T) (string, int32) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().(*net.TCPAddr)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return a.IP.String(), int32(a.Port)
}

// namedCoordinator answers every coordinator lookup with host:port while the outage that
// lost reports lasts (down from its start), as a broker whose metadata still names a dead
// coordinator does. It returns how many lookups it answered so.
func namedCoordinator(k *kafkatest.Kafka, lost *atomic.Int64, down time.Duration, host string, port int32) *atomic.Int64 {
	var named atomic.Int64
	k.Cluster.ControlKey(int16(kmsg.FindCoordinator), func(r kmsg.Request) (kmsg.Response, error, bool) {
		k.Cluster.KeepControl()
		at := lost.Load()
		if at == 0 || time.Since(time.Unix(0, at)) >= down {
			return nil, nil, false
		}
		req := r.(*kmsg.FindCoordinatorRequest)
		res := req.ResponseKind().(*kmsg.FindCoordinatorResponse)
		res.NodeID, res.Host, res.Port = 99, host, port
		keys := req.CoordinatorKeys
		if len(keys) == 0 {
			keys = []string{req.CoordinatorKey}
		}
		for _, key := range keys {
			c := kmsg.NewFindCoordinatorResponseCoordinator()
			c.Key, c.NodeID, c.Host, c.Port = key, 99, host, port
			res.Coordinators = append(res.Coordinators, c)
		}
		named.Add(1)
		return res, nil, true
	})
	return &named
}
