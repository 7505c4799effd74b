// Package bench measures the data plane against baselines taken in the same run: the
// dispatcher against raw kafka-go consumption and raw HTTP posting, the receiver against a raw
// kafka-go Writer, end-to-end latency against a direct produce -> consume loop, and the naive
// consume-post-commit loop a user would write. Absolute figures on a shared machine vary a lot
// between runs; the ratios to baselines measured minutes apart on the same Kafka do not.
//
// cmd/bench runs everything and writes docs/benchmarks.md and docs/benchmarks.png.
package bench

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/internal/kafkabinding"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

// Namespace is the namespace of every benchmark channel.
const Namespace = "bench"

// Env is the Kafka the benchmarks run against: an embedded kfake, or the cluster named by
// KAFKA_BOOTSTRAP_SERVERS.
type Env struct {
	Brokers []string
	// External is true for a real cluster.
	External bool
	client   *kafka.Client
	closeFn  func()
	// Settle is how long a started dispatcher process idles before it is measured (P5, S2), so
	// start-up garbage is collected as in a long-running pod; 3 s unless set.
	Settle time.Duration
	// Patience multiplies every time budget of a measurement (1 unless set): a short run on a
	// loaded machine (make bench-short inside make test) proves the tool runs, so it waits
	// longer before it calls a slow measurement an error.
	Patience int
	// ChildProfiles is where P5's dispatcher processes write their heap and goroutine
	// profiles and memstats when measured (p5-N-idle.*, p5-N-short.* ...); empty: none.
	ChildProfiles string
	// cluster is the embedded Kafka (nil for a real cluster): S2 counts its requests.
	cluster *kfake.Cluster
	seq     atomic.Int64
	runID   string
}

// NewEnv starts the embedded Kafka unless KAFKA_BOOTSTRAP_SERVERS names a cluster.
func NewEnv() (*Env, error) {
	e := &Env{runID: strconv.FormatInt(time.Now().Unix()%1000000, 36), Settle: 3 * time.Second, Patience: 1}
	if s := os.Getenv("KAFKA_BOOTSTRAP_SERVERS"); s != "" {
		e.Brokers = strings.Split(s, ",")
		e.External = true
		e.closeFn = func() {}
	} else {
		c, err := kafkatest.NewCluster()
		if err != nil {
			return nil, fmt.Errorf("starting the embedded Kafka: %w", err)
		}
		e.Brokers = c.ListenAddrs()
		e.closeFn = c.Close
		e.cluster = c
	}
	e.client = &kafka.Client{Addr: kafka.TCP(e.Brokers...), Timeout: 30 * time.Second}
	return e, nil
}

// Close stops the embedded Kafka.
func (e *Env) Close() { e.closeFn() }

// Channel is one benchmark channel and its topic.
type Channel struct {
	Name       string
	Topic      string
	Partitions int
}

// NewChannel creates a fresh topic, so no run sees another's records or offsets.
func (e *Env) NewChannel(prefix string, partitions int) (Channel, error) {
	name := fmt.Sprintf("%s-%s-%d", prefix, e.runID, e.seq.Add(1))
	ch := Channel{Name: name, Topic: naming.Topic(Namespace, name), Partitions: partitions}
	res, err := e.client.CreateTopics(context.Background(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: ch.Topic, NumPartitions: partitions, ReplicationFactor: 1,
	}}})
	if err != nil {
		return ch, fmt.Errorf("creating topic %s: %w", ch.Topic, err)
	}
	if err := res.Errors[ch.Topic]; err != nil {
		return ch, fmt.Errorf("creating topic %s: %w", ch.Topic, err)
	}
	return ch, nil
}

// Event is the benchmark's CloudEvent: 256 bytes of JSON data, id "<prefix>-<i>".
func Event(prefix string, i int) *event.Event {
	ev := event.New()
	ev.SetID(prefix + "-" + strconv.Itoa(i))
	ev.SetSource("/bench")
	ev.SetType("dev.kafkachannel.bench")
	_ = ev.SetData("application/json", map[string]string{"pad": strings.Repeat("x", 240)})
	return &ev
}

// Fill writes n events spread over every partition, in large batches (the setup, not a figure).
func (e *Env) Fill(ch Channel, prefix string, n int) error { return e.fill(ch, prefix, n, nil) }

// fill is Fill with record keys: keyOf(i) is record i's key; nil writes no keys, round-robin.
// Keyed records go where the key's hash says, as the receiver's writer places a partitionkey.
func (e *Env) fill(ch Channel, prefix string, n int, keyOf func(i int) []byte) error {
	w := &kafka.Writer{
		Addr: kafka.TCP(e.Brokers...), Topic: ch.Topic, Balancer: &kafka.RoundRobin{},
		RequiredAcks: kafka.RequireAll, BatchSize: 1000, BatchTimeout: 5 * time.Millisecond,
	}
	if keyOf != nil {
		w.Balancer = &kafka.Hash{}
	}
	defer func() { _ = w.Close() }()
	const chunk = 5000
	for start := 0; start < n; start += chunk {
		msgs := make([]kafka.Message, 0, chunk)
		for i := start; i < n && i < start+chunk; i++ {
			m, err := kafkabinding.ToMessage(Event(prefix, i))
			if err != nil {
				return fmt.Errorf("encoding event %d: %w", i, err)
			}
			if keyOf != nil {
				m.Key = keyOf(i)
			}
			msgs = append(msgs, m)
		}
		if err := w.WriteMessages(context.Background(), msgs...); err != nil {
			return fmt.Errorf("filling %s: %w", ch.Topic, err)
		}
	}
	return nil
}

// Sink is a subscriber that counts unique event ids and can answer after a delay.
type Sink struct {
	srv   *http.Server
	URL   string
	delay time.Duration

	mu    sync.Mutex
	seen  map[string]struct{}
	first time.Time
	last  time.Time
	hook  func(id string, at time.Time)
	done  chan struct{}
	want  int
}

// Count is how many distinct ids arrived.
func (s *Sink) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}

// Expect arms Done to close once n distinct ids arrived, and resets the sink.
func (s *Sink) Expect(n int) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = make(map[string]struct{}, n)
	s.first, s.last = time.Time{}, time.Time{}
	s.want = n
	s.done = make(chan struct{})
	return s.done
}

// Span is the time between the first and the last new id.
func (s *Sink) Span() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last.Sub(s.first)
}

func (s *Sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("Ce-Id")
	if s.delay > 0 {
		time.Sleep(s.delay)
	}
	now := time.Now()
	s.mu.Lock()
	if _, dup := s.seen[id]; !dup && id != "" {
		s.seen[id] = struct{}{}
		if s.first.IsZero() {
			s.first = now
		}
		s.last = now
		if len(s.seen) == s.want && s.done != nil {
			close(s.done)
		}
	}
	hook := s.hook
	s.mu.Unlock()
	if hook != nil {
		hook(id, now)
	}
	w.WriteHeader(http.StatusAccepted)
}

// Close stops the sink.
func (s *Sink) Close() { _ = s.srv.Close() }

// Within is budget stretched by Patience.
func (e *Env) Within(budget time.Duration) time.Duration {
	return budget * time.Duration(max(e.Patience, 1))
}
