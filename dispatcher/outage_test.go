package dispatcher

import (
	"fmt"
	"net/http"

	"github.com/cloudevents/sdk-go/v2/event"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/environments/poll"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// The broker goes away and comes back with its data: the running dispatcher carries on without
// a restart and delivers everything produced before and after.
func TestRecoversFromBrokerRestart(t *testing.T) {
	skipUnlessInProcessLong(t, "restarts the in-process broker", "waits for reconnects")
	dir := t.TempDir()
	port := freePort(t)
	opts := []kfake.Opt{kfake.DataDir(dir), kfake.Ports(port)}
	c, err := kafkatest.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	k := &kafkatest.Kafka{Brokers: c.ListenAddrs(), Cluster: c}
	e := newEnv(t, k, 2)
	s := newSink(t, nil)
	rd := e.start(nil)
	sp := sub("uid", 1, s.URL)
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sp}})
	rd.waitReady(t, sp)
	ids := append(e.produce(0, 10), e.produce(1, 10)...)
	s.waitIDs(t, ids, 10*time.Second)

	c.Close()
	time.Sleep(time.Second) // the dispatcher notices the broker is gone
	c, err = kafkatest.NewCluster(opts...)
	if err != nil {
		t.Fatalf("restarting kfake: %v", err)
	}
	t.Cleanup(c.Close)
	ids = append(ids, e.produce(0, 10)...)
	ids = append(ids, e.produce(1, 10)...)
	s.waitIDs(t, ids, 60*time.Second)
}

// On shutdown a delivery that never finishes is abandoned after DrainTimeout: Run returns, the
// handled records before it are committed and it is not.
func TestShutdownAbandonsStuckDeliveryAndCommitsTheRest(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 1)
	hang := make(chan struct{})
	s := newSink(t, func(ev *event.Event, w http.ResponseWriter) bool {
		if ev.ID() == "p0-4" {
			<-hang
		}
		w.WriteHeader(http.StatusAccepted)
		return true
	})
	t.Cleanup(func() { close(hang) }) // runs before the sink's Close, which waits for handlers
	rd := e.start(func(c *Config) { c.DrainTimeout = 500 * time.Millisecond; c.CommitInterval = time.Hour })
	sp := sub("uid", 1, s.URL)
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sp}})
	rd.waitReady(t, sp)
	ids := e.produce(0, 6)
	s.waitIDs(t, ids[:3], 10*time.Second)
	poll.Eventually(t, 10*time.Second, "condition", func() error {
		if s.attemptCount() < 4 {
			return fmt.Errorf("stuck delivery not started")
		}
		return nil
	})
	done := make(chan struct{})
	go func() { rd.stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return with a delivery stuck")
	}
	if c := e.committed("uid"); c[0] != 3 {
		t.Fatalf("committed %d, want 3 (the stuck record at offset 3 stays uncommitted)", c[0])
	}
}
