package dispatcher

import (
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/environments/poll"
)

// When the last subscriber that trusts a CA bundle goes, its HTTP client goes too and the idle
// connections it kept to that subscriber are closed: subscribers that come and go do not pile
// up clients and sockets.
func TestHTTPClientOfAnUnusedCABundleIsEvictedAndItsConnectionsClosed(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 1)
	plain := newSink(t, nil)
	tlsS := &sink{}
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	tlsS.Server = httptest.NewUnstartedServer(http.HandlerFunc(tlsS.serve))
	tlsS.Config.ConnState = func(c net.Conn, st http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		switch st {
		case http.StateNew:
			open[c] = true
		case http.StateClosed, http.StateHijacked:
			delete(open, c)
		}
	}
	tlsS.StartTLS()
	t.Cleanup(tlsS.Close)
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsS.Certificate().Raw}))
	openConns := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(open)
	}
	clients := func(rd *runningDispatcher) int {
		rd.mu.Lock()
		defer rd.mu.Unlock()
		return len(rd.clients)
	}

	rd := e.start(nil)
	sa := sub("uid-a", 1, plain.URL)
	sb := sub("uid-b", 1, tlsS.URL)
	sb.SubscriberCACerts = &caPEM
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sa, sb}})
	rd.waitReady(t, sa, sb)
	ids := e.produce(0, 5)
	tlsS.waitIDs(t, ids, 30*time.Second)
	plain.waitIDs(t, ids, 30*time.Second)
	if n := openConns(); n == 0 {
		t.Fatal("no connection to the TLS subscriber is kept open; the test needs one")
	}
	if n := clients(rd); n != 2 {
		t.Fatalf("%d HTTP clients, want 2 (system roots and the subscriber's CA)", n)
	}

	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sa}})
	poll.Eventually(t, 30*time.Second, "the unused client evicted and its connections closed", func() error {
		if n := clients(rd); n != 1 {
			return fmt.Errorf("%d HTTP clients cached", n)
		}
		if n := openConns(); n != 0 {
			return fmt.Errorf("%d connections to the removed subscriber still open", n)
		}
		return nil
	})
	// The remaining subscriber's client still works.
	more := e.produce(0, 3)
	plain.waitIDs(t, more, 30*time.Second)
}

// Subscribers of one channel on one host share a connection pool whose size is capped: with
// more deliveries in flight than connections kept idle, the surplus connections were dialed
// for one request each and closed after it (P8 of make bench, 50 subscribers on one host).
func TestConnectionsToOneHostStayWithinTheCap(t *testing.T) {
	k := kafkatest.Start(t)
	const parts, perPart, subs, maxConns = 4, 30, 3, 3
	e := newEnv(t, k, parts)
	s := &sink{respond: func(_ *event.Event, w http.ResponseWriter) bool {
		time.Sleep(20 * time.Millisecond) // keeps deliveries in flight at once
		w.WriteHeader(http.StatusAccepted)
		return true
	}}
	var dialed atomic.Int32
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			dialed.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)

	rd := e.start(func(c *Config) { c.MaxConnsPerHost, c.MaxInFlight = maxConns, 8 })
	var specs []v1beta1.SubscriberSpec
	for i := range subs {
		specs = append(specs, sub(fmt.Sprintf("uid-%d", i), 1, fmt.Sprintf("%s/%d", s.URL, i)))
	}
	rd.Update(Channel{Subscribers: specs, Unordered: true})
	rd.waitReady(t, specs...)
	var ids []string
	for p := range parts {
		ids = append(ids, e.produce(p, perPart)...)
	}
	poll.Eventually(t, 60*time.Second, "every event delivered to every subscriber", func() error {
		got := s.ids()
		for _, id := range ids {
			if got[id] < subs {
				return fmt.Errorf("event %s delivered %d times, want %d", id, got[id], subs)
			}
		}
		return nil
	})
	// Without the cap, up to subs x parts x 8 = 96 deliveries run at once, each on a
	// connection of its own.
	if n := dialed.Load(); n > maxConns {
		t.Errorf("%d connections opened to the one host, want at most %d", n, maxConns)
	}
}
