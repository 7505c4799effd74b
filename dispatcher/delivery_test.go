package dispatcher

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/environments/poll"
)

func TestTwoSubscribersEachGetEveryEventAndChangesApplyLive(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 2)
	a, b, b2 := newSink(t, nil), newSink(t, nil), newSink(t, nil)
	rd := e.start(nil)
	sa, sb := sub("uid-a", 1, a.URL), sub("uid-b", 1, b.URL)
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sa, sb}})
	rd.waitReady(t, sa, sb)
	ids := append(e.produce(0, 30), e.produce(1, 30)...)
	a.waitIDs(t, ids, 20*time.Second)
	b.waitIDs(t, ids, 20*time.Second)
	poll.Eventually(t, 10*time.Second, "condition", func() error {
		if c := e.committed("uid-b"); c[0] != 30 || c[1] != 30 {
			return fmt.Errorf("committed %v", c)
		}
		return nil
	})

	// A new generation of b points elsewhere: it is ready at generation 2 at once, and the
	// group keeps its position (nothing replayed to the new URI).
	sb2 := sub("uid-b", 2, b2.URL)
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sa, sb2}})
	rd.waitReady(t, sa, sb2)
	more := e.produce(0, 10)
	b2.waitIDs(t, more, 20*time.Second)
	if n := len(b2.received()); n != 10 {
		t.Errorf("new subscriber URI got %d events, want the 10 new ones only", n)
	}

	// Removing a subscriber drops its state; the other keeps going.
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sa}})
	poll.Eventually(t, 10*time.Second, "condition", func() error {
		if _, ok := rd.State("uid-b"); ok {
			return fmt.Errorf("state of removed subscriber still present")
		}
		return nil
	})
	last := e.produce(1, 5)
	a.waitIDs(t, last, 20*time.Second)
}

func TestSubscriberAddedWhileEventsFlowMissesNothingAfterReady(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 3)
	a, b := newSink(t, nil), newSink(t, nil)
	rd := e.start(nil)
	sa := sub("uid-a", 1, a.URL)
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sa}})
	rd.waitReady(t, sa)
	before := e.produce(0, 10)

	// A producer keeps writing; each batch remembers whether it was acknowledged after b was
	// reported ready.
	var mu sync.Mutex
	var afterReady []string
	ready := make(chan struct{})
	stop := make(chan struct{})
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			isReady := false
			select {
			case <-ready:
				isReady = true
			default:
			}
			ids := e.produce(i%e.parts, 5)
			if isReady {
				mu.Lock()
				afterReady = append(afterReady, ids...)
				mu.Unlock()
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	time.Sleep(100 * time.Millisecond) // let events flow before the subscriber is added
	sb := sub("uid-b", 1, b.URL)
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sa, sb}})
	rd.waitReady(t, sa, sb)
	// Start offsets are committed for every partition before Ready.
	for p, o := range e.committed("uid-b") {
		if o < 0 {
			t.Fatalf("partition %d has no committed start offset although ready", p)
		}
	}
	close(ready)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	<-produced
	mu.Lock()
	defer mu.Unlock()
	if len(afterReady) == 0 {
		t.Fatal("no events produced after ready")
	}
	b.waitIDs(t, afterReady, 30*time.Second)
	got := b.ids()
	for _, id := range before {
		if got[id] > 0 {
			t.Errorf("event %s produced before the subscriber was added was delivered: the start is the end of the topic", id)
		}
	}
}

func TestRetriesBackoffAndDeadLetter(t *testing.T) {
	k := kafkatest.Start(t)
	cases := []struct {
		name     string
		policy   v1beta1.BackoffPolicyType
		retry    int32
		status   int
		failures int // answers with status this many times, then 202
		attempts int
		dead     bool
	}{
		{"linear, always failing", v1beta1.BackoffPolicyLinear, 3, http.StatusInternalServerError, 100, 4, true},
		{"exponential, always failing", v1beta1.BackoffPolicyExponential, 2, http.StatusServiceUnavailable, 100, 3, true},
		{"exponential, recovers", v1beta1.BackoffPolicyExponential, 4, http.StatusTooManyRequests, 2, 3, false},
		{"404 is retried", v1beta1.BackoffPolicyLinear, 1, http.StatusNotFound, 100, 2, true},
		{"400 is not retried", v1beta1.BackoffPolicyLinear, 5, http.StatusBadRequest, 100, 1, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, k, 1)
			var mu sync.Mutex
			answered := 0
			s := newSink(t, func(ev *event.Event, w http.ResponseWriter) bool {
				mu.Lock()
				defer mu.Unlock()
				answered++
				if answered <= tc.failures {
					w.Header().Set("Retry-After", "0")
					w.WriteHeader(tc.status)
					_, _ = w.Write([]byte("boom " + ev.ID()))
					return false
				}
				w.WriteHeader(http.StatusAccepted)
				return true
			})
			dls := newSink(t, nil)
			rd := e.start(nil)
			sp := sub("uid", 1, s.URL)
			policy := tc.policy
			sp.Delivery = &v1beta1.DeliverySpec{Retry: ptr(tc.retry), BackoffPolicy: &policy, BackoffDelay: ptr("PT0.01S"),
				DeadLetterSink: &v1beta1.Destination{URI: &dls.URL}}
			rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sp}})
			rd.waitReady(t, sp)
			ids := e.produce(0, 1)
			poll.Eventually(t, 20*time.Second, "condition", func() error {
				if c := e.committed("uid"); c[0] != 1 {
					return fmt.Errorf("committed %v", c)
				}
				return nil
			})
			if got := s.attemptCount(); got != tc.attempts {
				t.Errorf("attempts = %d, want %d", got, tc.attempts)
			}
			group := rd.groupID("uid")
			if v, _ := metricValue(t, rd, MetricRetries, map[string]string{"consumer": group}); int(v) != tc.attempts-1 {
				t.Errorf("retries metric = %v, want %d", v, tc.attempts-1)
			}
			dead := dls.received()
			if !tc.dead {
				if len(dead) != 0 || len(s.received()) != 1 {
					t.Errorf("dead-lettered %d, delivered %d; want 0 and 1", len(dead), len(s.received()))
				}
				return
			}
			if len(dead) != 1 {
				t.Fatalf("dead-letter sink got %d events, want 1", len(dead))
			}
			d := dead[0]
			if d.ID() != ids[0] || d.Type() != "test.event" {
				t.Errorf("dead-lettered event is not the original: %s", d)
			}
			ext := d.Extensions()
			if fmt.Sprint(ext[ExtErrorDest]) != s.URL || fmt.Sprint(ext[ExtErrorCode]) != fmt.Sprint(tc.status) {
				t.Errorf("error extensions: %v", ext)
			}
			data, err := base64.StdEncoding.DecodeString(fmt.Sprint(ext[ExtErrorData]))
			if err != nil || string(data) != "boom "+ids[0] {
				t.Errorf("knativeerrordata = %q (%v), want the response body", data, err)
			}
			if v, _ := metricValue(t, rd, MetricDeadLettered, map[string]string{"consumer": group}); v != 1 {
				t.Errorf("dead-lettered metric = %v", v)
			}
		})
	}
}

func TestBackoffPolicy(t *testing.T) {
	lin, _ := ResolvePolicy(&v1beta1.DeliverySpec{BackoffPolicy: ptr(v1beta1.BackoffPolicyLinear), BackoffDelay: ptr("PT0.1S")}, nil)
	exp, _ := ResolvePolicy(nil, &v1beta1.DeliverySpec{BackoffDelay: ptr("PT0.1S"), Retry: ptr(int32(3)), Timeout: ptr("PT2S")})
	for n, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 300 * time.Millisecond} {
		if got := lin.Backoff(n); got != want {
			t.Errorf("linear retry %d: %s, want %s", n, got, want)
		}
	}
	for n, want := range map[int]time.Duration{1: 200 * time.Millisecond, 2: 400 * time.Millisecond, 3: 800 * time.Millisecond} {
		if got := exp.Backoff(n); got != want {
			t.Errorf("exponential retry %d: %s, want %s", n, got, want)
		}
	}
	if exp.Retries != 3 || exp.Timeout != 2*time.Second {
		t.Errorf("channel fallback not applied: %+v", exp)
	}
	// The subscriber's fields win one by one over the channel's.
	p, err := ResolvePolicy(&v1beta1.DeliverySpec{Retry: ptr(int32(1))}, &v1beta1.DeliverySpec{Retry: ptr(int32(9)), BackoffDelay: ptr("PT1S")})
	if err != nil || p.Retries != 1 || p.Delay != time.Second {
		t.Errorf("merge: %+v %v", p, err)
	}
	if _, err := ResolvePolicy(&v1beta1.DeliverySpec{Timeout: ptr("10s")}, nil); err == nil {
		t.Error("a non ISO-8601 timeout was accepted")
	}
	if got := retryAfter("3", time.Now()); got != 3*time.Second {
		t.Errorf("Retry-After seconds: %s", got)
	}
	now := time.Now()
	if got := retryAfter(now.Add(5*time.Second).UTC().Format(http.TimeFormat), now); got < 3*time.Second || got > 6*time.Second {
		t.Errorf("Retry-After date: %s", got)
	}
}

func TestTracker(t *testing.T) {
	tr := newTracker(10)
	for _, o := range []int64{10, 11, 13, 14} { // 12 is a gap (compaction)
		tr.add(o, 15)
	}
	tr.markDone(11)
	tr.markDone(13)
	if got := tr.committable(); got != 10 {
		t.Fatalf("committable %d with 10 in flight, want 10", got)
	}
	tr.markDone(10)
	if got := tr.committable(); got != 14 {
		t.Fatalf("committable %d, want 14", got)
	}
	tr.markDone(14)
	if got := tr.committable(); got != 15 {
		t.Fatalf("committable %d, want 15", got)
	}
}

func TestReplyDeliveredAndCommitHeldUntilAcked(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 1)
	subscriber := newSink(t, writeReply)
	release := make(chan struct{})
	replies := newSink(t, func(ev *event.Event, w http.ResponseWriter) bool {
		<-release
		w.WriteHeader(http.StatusAccepted)
		return true
	})
	rd := e.start(nil)
	sp := sub("uid", 1, subscriber.URL)
	sp.ReplyURI = &replies.URL
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sp}})
	rd.waitReady(t, sp)
	ids := e.produce(0, 1)
	subscriber.waitIDs(t, ids, 10*time.Second)
	poll.Eventually(t, 10*time.Second, "condition", func() error {
		if replies.attemptCount() == 0 {
			return fmt.Errorf("reply not attempted yet")
		}
		return nil
	})
	// The reply is in flight: the original must stay uncommitted for a while.
	for i := 0; i < 10; i++ {
		if c := e.committed("uid"); c[0] != 0 {
			t.Fatalf("committed %d before the reply was acknowledged", c[0])
		}
		time.Sleep(30 * time.Millisecond)
	}
	close(release)
	poll.Eventually(t, 10*time.Second, "condition", func() error {
		if c := e.committed("uid"); c[0] != 1 {
			return fmt.Errorf("committed %v", c)
		}
		return nil
	})
	got := replies.received()
	if len(got) != 1 || got[0].ID() != "reply-"+ids[0] || string(got[0].Data()) != "re: "+ids[0] {
		t.Fatalf("reply sink got %v", got)
	}
}

func TestNonCloudEventRecordsAreSkippedAndDeadLettered(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 1)
	s, dls := newSink(t, nil), newSink(t, nil)
	rd := e.start(nil)
	sp := sub("uid", 1, s.URL)
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sp}, DeadLetterSinkURI: dls.URL})
	rd.waitReady(t, sp)
	e.produceRaw(0, "not a cloudevent")
	ids := e.produce(0, 3)
	s.waitIDs(t, ids, 10*time.Second)
	poll.Eventually(t, 10*time.Second, "condition", func() error {
		if c := e.committed("uid"); c[0] != 4 {
			return fmt.Errorf("committed %v", c)
		}
		return nil
	})
	dead := dls.received()
	if len(dead) != 1 || dead[0].Type() != UndecodableEventType || string(dead[0].Data()) != "not a cloudevent" {
		t.Fatalf("dead-letter sink got %v", dead)
	}
	if dead[0].Extensions()[ExtErrorDest] != s.URL {
		t.Errorf("knativeerrordest = %v", dead[0].Extensions()[ExtErrorDest])
	}
	if v, _ := metricValue(t, rd, MetricDiscarded, map[string]string{"reason": "not_cloudevent"}); v != 1 {
		t.Errorf("discarded metric = %v", v)
	}
}

func TestUnorderedCommitsContiguously(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 1)
	release := make(chan struct{})
	var heldID string
	var mu sync.Mutex
	s := newSink(t, func(ev *event.Event, w http.ResponseWriter) bool {
		mu.Lock()
		held := ev.ID() == heldID
		mu.Unlock()
		if held {
			<-release
		}
		w.WriteHeader(http.StatusAccepted)
		return true
	})
	rd := e.start(nil)
	sp := sub("uid", 1, s.URL)
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sp}, Unordered: true})
	rd.waitReady(t, sp)
	mu.Lock()
	heldID = "p0-3" // the third event, offset 2
	mu.Unlock()
	ids := e.produce(0, 20)
	// Every other event is delivered past the held one: deliveries overlap.
	others := append(append([]string{}, ids[:2]...), ids[3:]...)
	s.waitIDs(t, others, 10*time.Second)
	poll.Eventually(t, 30*time.Second, "condition", func() error {
		if c := e.committed("uid"); c[0] != 2 {
			return fmt.Errorf("committed %v, want 2", c)
		}
		return nil
	})
	for i := 0; i < 5; i++ {
		time.Sleep(50 * time.Millisecond)
		if c := e.committed("uid"); c[0] != 2 {
			t.Fatalf("committed %d past offset 2 still in flight", c[0])
		}
	}
	close(release)
	poll.Eventually(t, 10*time.Second, "condition", func() error {
		if c := e.committed("uid"); c[0] != 20 {
			return fmt.Errorf("committed %v, want 20", c)
		}
		return nil
	})
}

// tlsSink is a sink over https with a certificate from its own CA.
func tlsSink(t *testing.T) (*sink, string) {
	s := &sink{}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}))
	if _, err := x509.ParseCertificate(s.Certificate().Raw); err != nil {
		t.Fatal(err)
	}
	return s, caPEM
}

func TestHTTPSSubscriberWithCACerts(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 1)
	trusted, caPEM := tlsSink(t)
	untrusted, _ := tlsSink(t)
	dls := newSink(t, nil)
	rd := e.start(nil)
	good := sub("good", 1, trusted.URL)
	good.SubscriberCACerts = &caPEM
	bad := sub("bad", 1, untrusted.URL)
	bad.Delivery = &v1beta1.DeliverySpec{Retry: ptr(int32(0)), DeadLetterSink: &v1beta1.Destination{URI: &dls.URL}}
	invalid := sub("invalid", 1, trusted.URL)
	invalid.SubscriberCACerts = ptr("not a pem")
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{good, bad, invalid}})
	rd.waitReady(t, good, bad)
	poll.Eventually(t, 30*time.Second, "condition", func() error {
		st, _ := rd.State("invalid")
		if st.Ready != ReadyFalse || !strings.Contains(st.Message, "subscriberCACerts") {
			return fmt.Errorf("invalid CA bundle state: %+v", st)
		}
		return nil
	})
	ids := e.produce(0, 3)
	trusted.waitIDs(t, ids, 10*time.Second)
	dls.waitIDs(t, ids, 10*time.Second)
	d := dls.received()[0]
	data, _ := base64.StdEncoding.DecodeString(fmt.Sprint(d.Extensions()[ExtErrorData]))
	if !strings.Contains(string(data), "not trusted") || !strings.Contains(string(data), "subscriberCACerts") {
		t.Errorf("knativeerrordata does not explain the TLS failure: %q", data)
	}
	if v, _ := metricValue(t, rd, MetricDeliveries, map[string]string{"consumer": rd.groupID("bad"), "code_class": "tls"}); v != 3 {
		t.Errorf("tls deliveries metric = %v, want 3", v)
	}
}

// Delivery format json sends structured mode; the default is binary. Either way the event
// arrives whole.
func TestDeliveryFormat(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 1)
	var mu sync.Mutex
	contentTypes := map[string]string{}
	mk := func(name string) *sink {
		s := &sink{}
		s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			contentTypes[name] = r.Header.Get("Content-Type")
			mu.Unlock()
			s.serve(w, r)
		}))
		t.Cleanup(s.Close)
		return s
	}
	bin, js := mk("binary"), mk("json")
	rd := e.start(nil)
	sb, sj := sub("bin", 1, bin.URL), sub("json", 1, js.URL)
	sj.Delivery = &v1beta1.DeliverySpec{Format: ptr(v1beta1.DeliveryFormat("json"))}
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sb, sj}})
	rd.waitReady(t, sb, sj)
	ids := e.produce(0, 1)
	bin.waitIDs(t, ids, 10*time.Second)
	js.waitIDs(t, ids, 10*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if contentTypes["binary"] != "application/json" || !strings.HasPrefix(contentTypes["json"], "application/cloudevents+json") {
		t.Errorf("content types %v", contentTypes)
	}
	if got := js.received()[0]; got.Extensions()["seq"] == nil || !strings.Contains(string(got.Data()), `"seq"`) {
		t.Errorf("structured event lost data: %s", got)
	}
}

// Knative's channel dispatchers name the channel's namespace in a Kn-Namespace header on every
// delivery (to the subscriber, its reply and its dead-letter sink), and Knative's conformance
// suite requires it at the dead-letter sink (TestChannelDeadLetterSink): receivers use it to
// tell which namespace an event comes from.
func TestDeliveriesCarryKnNamespaceHeader(t *testing.T) {
	seen := deliveryHeaders(t, KnNamespaceHeader)
	for _, name := range []string{"subscriber", "reply", "failing subscriber", "dead-letter sink"} {
		for _, got := range seen[name] {
			if got != testNS {
				t.Errorf("%s: Kn-Namespace = %q, want the channel's namespace %q", name, got, testNS)
			}
		}
	}
}

// A subscriber is asked for a reply with "Prefer: reply", whether or not the subscription has a
// reply destination, as Knative's dispatchers ask (Knative's TestChannelPreferHeaderCheck).
func TestSubscriberDeliveryPrefersReply(t *testing.T) {
	seen := deliveryHeaders(t, "Prefer")
	for _, name := range []string{"subscriber", "failing subscriber"} {
		for _, got := range seen[name] {
			if got != "reply" {
				t.Errorf("%s: Prefer = %q, want reply", name, got)
			}
		}
	}
}

// deliveryHeaders delivers one event to a replying subscriber (with a reply destination) and to
// a failing one (with a dead-letter sink), and returns the values of header each destination
// received, by destination.
func deliveryHeaders(t *testing.T, header string) map[string][]string {
	t.Helper()
	k := kafkatest.Start(t)
	e := newEnv(t, k, 1)
	var mu sync.Mutex
	seen := map[string][]string{}
	record := func(name string, h http.HandlerFunc) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			seen[name] = append(seen[name], r.Header.Get(header))
			mu.Unlock()
			h(w, r)
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	accept := func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusAccepted) }
	replier := newSink(t, writeReply)
	subscriberURL := record("subscriber", replier.serve)
	replyURL := record("reply", accept)
	failingURL := record("failing subscriber", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	})
	dlsURL := record("dead-letter sink", accept)

	rd := e.start(nil)
	replying := sub("replying", 1, subscriberURL)
	replying.ReplyURI = &replyURL
	failing := sub("failing", 1, failingURL)
	failing.Delivery = &v1beta1.DeliverySpec{Retry: ptr(int32(0)), DeadLetterSink: &v1beta1.Destination{URI: &dlsURL}}
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{replying, failing}})
	rd.waitReady(t, replying, failing)
	e.produce(0, 1)
	poll.Eventually(t, 20*time.Second, "condition", func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, name := range []string{"subscriber", "reply", "failing subscriber", "dead-letter sink"} {
			if len(seen[name]) == 0 {
				return fmt.Errorf("%s not called yet", name)
			}
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	out := map[string][]string{}
	for k, v := range seen {
		out[k] = append([]string(nil), v...)
	}
	return out
}
