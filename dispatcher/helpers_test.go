package dispatcher

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/environments/poll"
	"github.com/kafkachannel/kafkachannel/internal/kafkabinding"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

const testNS = "ns"

// env is one channel's topic on a test Kafka.
type env struct {
	t       *testing.T
	kafka   *kafkatest.Kafka
	name    string
	topic   string
	parts   int
	writer  *kafka.Writer
	client  *kafka.Client
	counter int
}

var channelSeq struct {
	sync.Mutex
	n int
}

// skipUnlessInProcessLong skips a test that injects faults into the in-process broker when the
// tests run against an external Kafka (why) or under -short (long: what takes the time).
func skipUnlessInProcessLong(t *testing.T, why, long string) {
	t.Helper()
	if kafkatest.External() {
		t.Skip(why)
	}
	if testing.Short() {
		t.Skip(long)
	}
}

func newEnv(t *testing.T, k *kafkatest.Kafka, partitions int) *env {
	t.Helper()
	channelSeq.Lock()
	channelSeq.n++
	name := fmt.Sprintf("ch%d-%d", channelSeq.n, time.Now().UnixNano()%100000)
	channelSeq.Unlock()
	e := &env{t: t, kafka: k, name: name, topic: naming.Topic(testNS, name), parts: partitions}
	e.client = &kafka.Client{Addr: kafka.TCP(k.Brokers...), Timeout: 10 * time.Second}
	res, err := e.client.CreateTopics(context.Background(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: e.topic, NumPartitions: partitions, ReplicationFactor: 1,
	}}})
	if err != nil {
		t.Fatalf("creating topic: %v", err)
	}
	if err := res.Errors[e.topic]; err != nil {
		t.Fatalf("creating topic: %v", err)
	}
	e.writer = &kafka.Writer{
		Addr:         kafka.TCP(k.Brokers...),
		Topic:        e.topic,
		BatchTimeout: time.Millisecond,
		RequiredAcks: kafka.RequireAll,
		// The key is the partition number, so tests choose where each record goes.
		Balancer: kafka.BalancerFunc(func(m kafka.Message, partitions ...int) int {
			p, _ := strconv.Atoi(string(m.Key))
			return partitions[p%len(partitions)]
		}),
	}
	t.Cleanup(func() { _ = e.writer.Close() })
	return e
}

// event is a CloudEvent with an id and a seq extension.
func testEvent(id string, seq int) *event.Event {
	ev := event.New()
	ev.SetID(id)
	ev.SetSource("/test")
	ev.SetType("test.event")
	ev.SetExtension("seq", strconv.Itoa(seq))
	_ = ev.SetData("application/json", map[string]int{"seq": seq})
	return &ev
}

// produce writes events to a partition, returning their ids.
func (e *env) produce(partition, n int) []string {
	e.t.Helper()
	msgs := make([]kafka.Message, 0, n)
	ids := make([]string, 0, n)
	for i := 0; i < n; i++ {
		e.counter++
		id := fmt.Sprintf("p%d-%d", partition, e.counter)
		m, err := kafkabinding.ToMessage(testEvent(id, e.counter))
		if err != nil {
			e.t.Fatal(err)
		}
		m.Key = []byte(strconv.Itoa(partition))
		msgs = append(msgs, m)
		ids = append(ids, id)
	}
	if err := e.writer.WriteMessages(context.Background(), msgs...); err != nil {
		e.t.Fatalf("producing: %v", err)
	}
	return ids
}

func (e *env) produceRaw(partition int, value string) {
	e.t.Helper()
	if err := e.writer.WriteMessages(context.Background(), kafka.Message{Key: []byte(strconv.Itoa(partition)), Value: []byte(value)}); err != nil {
		e.t.Fatalf("producing: %v", err)
	}
}

// committed returns the group's committed offset per partition (-1 when none).
func (e *env) committed(uid string) map[int]int64 {
	e.t.Helper()
	parts := make([]int, e.parts)
	for i := range parts {
		parts[i] = i
	}
	res, err := e.client.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{
		GroupID: naming.GroupID(testNS, e.name, uid), Topics: map[string][]int{e.topic: parts}})
	if err != nil {
		e.t.Fatalf("offset fetch: %v", err)
	}
	out := map[int]int64{}
	for i := range parts {
		out[i] = -1
	}
	for _, p := range res.Topics[e.topic] {
		out[p.Partition] = p.CommittedOffset
	}
	return out
}

// dispatcher starts a dispatcher for the env's channel, stopped at test end.
type runningDispatcher struct {
	*Dispatcher
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan struct{}
}

func (e *env) start(mod func(*Config)) *runningDispatcher {
	e.t.Helper()
	reg := prometheus.NewRegistry()
	cfg := Config{
		Brokers:           e.kafka.Brokers,
		ChannelNamespace:  testNS,
		ChannelName:       e.name,
		Registry:          reg,
		Log:               testr.NewWithOptions(e.t, testr.Options{Verbosity: 0}),
		CommitInterval:    50 * time.Millisecond,
		DrainTimeout:      3 * time.Second,
		MaxWait:           200 * time.Millisecond,
		SessionTimeout:    6 * time.Second,
		HeartbeatInterval: 300 * time.Millisecond,
		RebalanceTimeout:  6 * time.Second, // fits the 3 s drain (FinalCommitRoom)
		JoinGroupBackoff:  200 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rd := &runningDispatcher{Dispatcher: d, reg: reg, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(rd.done)
		_ = d.Run(ctx)
	}()
	e.t.Cleanup(rd.stop)
	return rd
}

func (rd *runningDispatcher) stop() {
	rd.cancel()
	<-rd.done
}

// waitReady waits until the dispatcher reports every uid ready at its generation.
func (rd *runningDispatcher) waitReady(t *testing.T, subs ...v1beta1.SubscriberSpec) {
	t.Helper()
	poll.Eventually(t, 30*time.Second, "condition", func() error {
		for _, s := range subs {
			st, ok := rd.State(s.UID)
			if !ok || st.Ready != ReadyTrue || st.Generation != s.Generation {
				return fmt.Errorf("subscriber %s: %+v", s.UID, st)
			}
		}
		return nil
	})
}

// sink is an HTTP server on 127.0.0.1 that records every event it receives.
type sink struct {
	*httptest.Server
	mu       sync.Mutex
	events   []*event.Event
	attempts int
	// respond decides the answer to each event; nil means 202.
	respond func(ev *event.Event, w http.ResponseWriter) bool
}

func newSink(t *testing.T, respond func(ev *event.Event, w http.ResponseWriter) bool) *sink {
	s := &sink{respond: respond}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *sink) serve(w http.ResponseWriter, r *http.Request) {
	ev, err := binding.ToEvent(r.Context(), cehttp.NewMessageFromHttpRequest(r))
	if err != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		http.Error(w, "not a CloudEvent: "+err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.attempts++
	s.mu.Unlock()
	if s.respond != nil && !s.respond(ev, w) {
		return
	}
	s.mu.Lock()
	s.events = append(s.events, ev)
	s.mu.Unlock()
	if s.respond == nil {
		w.WriteHeader(http.StatusAccepted)
	}
}

func (s *sink) received() []*event.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*event.Event(nil), s.events...)
}

func (s *sink) ids() map[string]int {
	out := map[string]int{}
	for _, e := range s.received() {
		out[e.ID()]++
	}
	return out
}

func (s *sink) attemptCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts
}

// waitIDs waits until every id was received at least once.
func (s *sink) waitIDs(t *testing.T, ids []string, timeout time.Duration) {
	t.Helper()
	poll.Eventually(t, timeout, "condition", func() error {
		got := s.ids()
		missing := 0
		first := ""
		for _, id := range ids {
			if got[id] == 0 {
				if missing == 0 {
					first = id
				}
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d events missing, e.g. %s", missing, len(ids), first)
		}
		return nil
	})
}

func sub(uid string, gen int64, uri string) v1beta1.SubscriberSpec {
	return v1beta1.SubscriberSpec{UID: uid, Generation: gen, SubscriberURI: &uri}
}

func ptr[T any](v T) *T { return &v }
