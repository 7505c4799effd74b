package dispatcher

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"github.com/segmentio/kafka-go"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
)

// A partition reader queues no more records than its partition's window can take: kafka-go
// allocates the queue up front, for every reader, idle or not.
func TestPartitionReaderQueueFollowsTheWindow(t *testing.T) {
	s := &subscription{d: &Dispatcher{cfg: Config{Brokers: []string{"127.0.0.1:9"}, Topic: "t", MaxInFlight: 16}}}
	for _, tc := range []struct {
		name  string
		order deliveryOrder
		want  int
	}{
		{"ordered", orderPartition, 1},
		{"ordered by key", orderKey, 16},
		{"unordered", orderNone, 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := kafka.NewReader(s.readerConfig(0, tc.order, logr.Discard()))
			defer func() { _ = r.Close() }()
			if got := r.Stats().QueueCapacity; got != int64(tc.want) {
				t.Errorf("queue capacity %d, want the window %d", got, tc.want)
			}
		})
	}
}

// goroutinesIn counts the goroutines whose stack has fn.
func goroutinesIn(t *testing.T, fn string) int {
	t.Helper()
	var b bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&b, 2); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}

// Partition readers that have fetched run no lag poller (a goroutine and a connection each,
// asking for the last offset every minute): the lag comes from the fetches' high watermark.
func TestIdlePartitionReadersRunNoLagPoller(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 2)
	sk := newSink(t, nil)
	rd := e.start(nil)
	s := sub("lag", 1, sk.URL)
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{s}})
	rd.waitReady(t, s)
	// A delivery on every partition: each reader has fetched, which is when kafka-go starts
	// its poller.
	ids := append(e.produce(0, 1), e.produce(1, 1)...)
	sk.waitIDs(t, ids, 30e9)
	if n := goroutinesIn(t, "kafka-go.(*Reader).readLag"); n != 0 {
		t.Errorf("%d lag pollers run for 2 partition readers", n)
	}
}

// countingDial dials and keeps the peak of connections open at once.
type countingDial struct {
	mu         sync.Mutex
	open, peak int
}

func (c *countingDial) dial(ctx context.Context, network, address string) (net.Conn, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.open++
	c.peak = max(c.peak, c.open)
	c.mu.Unlock()
	return &countedConn{Conn: conn, c: c}, nil
}

type countedConn struct {
	net.Conn
	c    *countingDial
	once sync.Once
}

func (cc *countedConn) Close() error {
	cc.once.Do(func() {
		cc.c.mu.Lock()
		cc.c.open--
		cc.c.mu.Unlock()
	})
	return cc.Conn.Close()
}

// Subscribers starting together resolve their start offsets a few at a time, so the admin
// client opens a few connections, not one per subscriber that it then keeps idle for 30 s.
func TestAdminRequestsOfManySubscribersShareFewConnections(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 1)
	sk := newSink(t, nil)
	var conns countingDial
	rd := e.start(func(c *Config) {
		c.Transport = &kafka.Transport{MetadataTopics: []string{e.topic}, Dial: conns.dial}
	})
	var subs []v1beta1.SubscriberSpec
	for i := range 300 {
		subs = append(subs, sub(fmt.Sprintf("many-%03d", i), 1, sk.URL))
	}
	rd.Update(Channel{Subscribers: subs})
	rd.waitReady(t, subs...)
	conns.mu.Lock()
	defer conns.mu.Unlock()
	// Each request may take a connection to the group's coordinator and one to any broker
	// (kafka-go pools them apart), and a connection goes back to the pool only after its
	// caller has the answer; 300 subscribers at once opened 570-700, and kept 380-450 idle.
	if limit := 5 * maxResolvingAtOnce; conns.peak > limit {
		t.Errorf("300 subscribers starting opened %d admin connections at once, want <= %d", conns.peak, limit)
	}
	if limit := 2*maxResolvingAtOnce + 1; conns.open > limit {
		t.Errorf("300 subscribers started keep %d admin connections, want <= %d", conns.open, limit)
	}
}
