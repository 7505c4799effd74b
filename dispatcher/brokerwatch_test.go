package dispatcher

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/environments/poll"
)

// frozenBroker accepts TCP connections and never answers on them, as a broker whose process
// is stopped (SIGSTOP) or cut off by a network that drops packets: the kernel still completes
// the handshake.
func frozenBroker(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			_ = c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	return ln.Addr().String()
}

// The first configured broker accepts connections and never answers. kafka-go's readers look
// their leader up there without a deadline and its group asks it for the coordinator on every
// join, so without the broker watch the subscriber never even starts; with it, the frozen
// broker is skipped after its first timeout and everything is delivered.
func TestFirstBrokerFrozenIsSkipped(t *testing.T) {
	skipUnlessInProcessLong(t, "puts a frozen broker in front of the in-process one", "waits for request timeouts")
	k := kafkatest.Start(t)
	e := newEnv(t, k, 2)
	s := newSink(t, nil)
	frozen := frozenBroker(t)
	rd := e.start(func(c *Config) {
		c.Brokers = append([]string{frozen}, k.Brokers...)
		// The admin requests are not what this test is about: they bootstrap from the live
		// broker only.
		c.Transport = &kafka.Transport{MetadataTopics: []string{e.topic}}
		c.Dialer = &kafka.Dialer{Timeout: 10 * time.Second}
	})
	rd.client.Addr = kafka.TCP(k.Brokers...)
	sp := sub("uid", 1, s.URL)
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sp}})
	rd.waitReady(t, sp)
	ids := append(e.produce(0, 5), e.produce(1, 5)...)
	s.waitIDs(t, ids, 30*time.Second)
}

// A broker marked as not answering is dialed again once it answers a probe; one that still
// does not stays marked.
func TestBrokerWatchClearsABrokerThatAnswersAgain(t *testing.T) {
	if kafkatest.External() {
		t.Skip("probes the in-process broker")
	}
	k := kafkatest.Start(t)
	frozen := frozenBroker(t)
	w := newBrokerWatch(&kafka.Dialer{Timeout: 5 * time.Second})
	t.Cleanup(w.close)
	live := k.Brokers[0]
	w.markDown(live)
	w.markDown(frozen)
	if !w.isDown(live) || !w.isDown(frozen) {
		t.Fatal("markDown did not mark")
	}
	if _, err := w.dialer(&kafka.Dialer{}).Dial("tcp", frozen); err == nil {
		t.Fatal("dialing a broker marked as not answering succeeded")
	}
	poll.Eventually(t, 10*time.Second, "the live broker cleared by a probe", func() error {
		if w.isDown(live) {
			return errNotAnswering
		}
		return nil
	})
	if !w.isDown(frozen) {
		t.Fatal("the frozen broker was cleared though it never answered")
	}
	c, err := w.dialer(&kafka.Dialer{Timeout: 5 * time.Second}).Dial("tcp", live)
	if err != nil {
		t.Fatalf("dialing the cleared broker: %v", err)
	}
	_ = c.Close()
}
