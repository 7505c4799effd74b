package dispatcher

import (
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/internal/kafkatest"
	"github.com/kafkachannel/kafkachannel/internal/poll"
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
