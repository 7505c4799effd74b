package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/segmentio/kafka-go"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/dispatcher"
	"github.com/kafkachannel/kafkachannel/internal/kafkaconn"
	"github.com/kafkachannel/kafkachannel/internal/naming"
	"github.com/kafkachannel/kafkachannel/receiver"
)

// Receiver is the real receiver library serving one channel on 127.0.0.1.
type Receiver struct {
	URL string
	r   *receiver.Receiver
	w   *receiver.Writer
}

// StartReceiver serves ch with the production writer settings (acks=all, 1 ms batch timeout).
func (e *Env) StartReceiver(ch Channel) (*Receiver, error) {
	kc, err := kafkaconn.Parse(map[string][]byte{kafkaconn.KeyBrokers: []byte(joinBrokers(e.Brokers))})
	if err != nil {
		return nil, fmt.Errorf("kafka config: %w", err)
	}
	idx := receiver.NewIndex()
	idx.SetChannel(receiver.Channel{Namespace: Namespace, Name: ch.Name, Topic: ch.Topic, Ready: true})
	w := receiver.NewWriter(kc, receiver.WriterOptions{})
	r, err := receiver.New(receiver.Config{Channels: idx, Writer: w, Kafka: kc, Log: logr.Discard()})
	if err != nil {
		return nil, fmt.Errorf("creating the receiver: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for the receiver: %w", err)
	}
	go func() { _ = r.Serve(ln) }()
	return &Receiver{URL: "http://" + ln.Addr().String() + naming.ChannelPath(Namespace, ch.Name), r: r, w: w}, nil
}

// Close shuts the receiver down.
func (r *Receiver) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = r.r.Shutdown(ctx)
}

func joinBrokers(b []string) string {
	out := ""
	for i, s := range b {
		if i > 0 {
			out += ","
		}
		out += s
	}
	return out
}

// Payload is a JSON document of about `size` bytes: the data of the benchmark's events.
func Payload(size int) []byte {
	return []byte(`{"pad":"` + string(bytes.Repeat([]byte("x"), max(size-10, 0))) + `"}`)
}

// payload is the 256-byte data of P3 and P4.
var payload = Payload(250)

// send posts one binary-mode event and wants 202.
func send(client *http.Client, url, id string) error { return sendData(client, url, id, payload) }

// sendData posts one binary-mode event with data and wants 202.
func sendData(client *http.Client, url, id string, data []byte) error {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Ce-Specversion", "1.0")
	req.Header.Set("Ce-Id", id)
	req.Header.Set("Ce-Source", "/bench")
	req.Header.Set("Ce-Type", "dev.kafkachannel.bench")
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("posting to the receiver: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("receiver answered %d", resp.StatusCode)
	}
	return nil
}

// parallel runs n jobs over `workers` goroutines and returns jobs per second.
func parallel(n, workers int, job func(i int) error) (float64, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var firstErr error
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := job(i); err != nil {
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	if firstErr != nil {
		return 0, firstErr
	}
	return float64(n) / el.Seconds(), nil
}

// ReceiverRate is P4: n events through the receiver from `senders` concurrent HTTP clients.
func (e *Env) ReceiverRate(ch Channel, n, senders int) (float64, error) {
	return e.ReceiverRateData(ch, n, senders, payload)
}

// ReceiverRateData is ReceiverRate with events carrying data (P4b: 20 KB).
func (e *Env) ReceiverRateData(ch Channel, n, senders int, data []byte) (float64, error) {
	r, err := e.StartReceiver(ch)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: senders * 2}}
	// Warm up: the writer's first request fetches metadata.
	if err := sendData(client, r.URL, "warmup", data); err != nil {
		return 0, err
	}
	return parallel(n, senders, func(i int) error { return sendData(client, r.URL, "p4-"+strconv.Itoa(i), data) })
}

// HTTPOnlyRate is P4's second baseline: the same senders posting the same events to a bare
// net/http server that reads each body and answers 202, no CloudEvents and no Kafka. It is
// the HTTP half of the receiver's job, as WriterRate is the Kafka half.
func (e *Env) HTTPOnlyRate(n, senders int, data []byte) (float64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("listening for the HTTP baseline: %w", err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	})}
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Close() }()
	url := "http://" + ln.Addr().String() + "/"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: senders * 2}}
	defer client.CloseIdleConnections()
	if err := sendData(client, url, "warmup", data); err != nil {
		return 0, err
	}
	return parallel(n, senders, func(i int) error { return sendData(client, url, "http-"+strconv.Itoa(i), data) })
}

// WriterRate is P4's baseline: a raw kafka-go Writer with acks=all, a 1 ms batch timeout (kafka-go's
// own batching; the receiver's Writer has no timeout but batches what arrives while a request is
// in flight) and the receiver's batch size, `senders` goroutines each writing one record at a
// time.
func (e *Env) WriterRate(ch Channel, n, senders int) (float64, error) {
	return e.WriterRateData(ch, n, senders, payload)
}

// WriterRateData is WriterRate with records carrying data (P4b: 20 KB). BatchBytes is the
// receiver's body limit (the receiver adds a little header room), so large records batch about
// as they do there.
func (e *Env) WriterRateData(ch Channel, n, senders int, data []byte) (float64, error) {
	w := &kafka.Writer{
		Addr: kafka.TCP(e.Brokers...), Topic: ch.Topic, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, BatchSize: receiver.DefaultBatchSize,
		BatchBytes: receiver.DefaultMaxBodyBytes,
	}
	defer func() { _ = w.Close() }()
	ctx := context.Background()
	if err := w.WriteMessages(ctx, kafka.Message{Value: data}); err != nil {
		return 0, fmt.Errorf("raw writer warm-up: %w", err)
	}
	return parallel(n, senders, func(i int) error {
		return w.WriteMessages(ctx, kafka.Message{Value: data, Headers: []kafka.Header{{Key: "ce_id", Value: []byte(strconv.Itoa(i))}}})
	})
}

// Latencies are percentiles of one latency run.
type Latencies struct {
	P50, P99, Max time.Duration
	N             int
}

func percentiles(ds []time.Duration) Latencies {
	if len(ds) == 0 {
		return Latencies{}
	}
	slices.Sort(ds)
	at := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	return Latencies{P50: at(0.50), P99: at(0.99), Max: ds[len(ds)-1], N: len(ds)}
}

// WriterStats summarises a kafka-go Writer over a run: where a record's time went before the
// broker acknowledged it.
type WriterStats struct {
	// Requests is the produce requests sent, Records the records in them.
	Requests, Records int64
	// BatchWait is from a batch's first record to its produce request starting: the batch
	// timeout, plus the wait behind the partition's previous request (kafka-go sends one at a
	// time per partition).
	BatchWaitAvg, BatchWaitMax time.Duration
	// Produce is one produce request's round trip to the broker's acknowledgement.
	ProduceAvg, ProduceMax time.Duration
	// QueueWait is the receiver Writer's own wait before a record's request starts (behind the
	// partition's request in flight); zero for a bare kafka-go Writer, whose wait is BatchWait.
	QueueWaitAvg, QueueWaitMax time.Duration
}

func writerStats(s kafka.WriterStats) WriterStats {
	return WriterStats{Requests: s.Writes, Records: s.Messages, BatchWaitAvg: s.BatchTime.Avg, BatchWaitMax: s.BatchTime.Max,
		ProduceAvg: s.WriteTime.Avg, ProduceMax: s.WriteTime.Max}
}

// receiverWriterStats is writerStats of the receiver's Writer, with its own queue's wait.
func receiverWriterStats(w *receiver.Writer) WriterStats {
	s := writerStats(w.Stats())
	_, s.QueueWaitAvg, s.QueueWaitMax = w.QueueWaits()
	return s
}

// String is the stats as the benchmark notes print them.
func (s WriterStats) String() string {
	per := 0.0
	if s.Requests > 0 {
		per = float64(s.Records) / float64(s.Requests)
	}
	q := ""
	if s.QueueWaitMax > 0 {
		q = fmt.Sprintf("queue wait avg %s / max %s ms; ", msf(s.QueueWaitAvg), msf(s.QueueWaitMax))
	}
	return fmt.Sprintf("%d produce requests, %.1f records each; %skafka-go batch wait avg %s / max %s ms; produce avg %s / max %s ms",
		s.Requests, per, q, msf(s.BatchWaitAvg), msf(s.BatchWaitMax), msf(s.ProduceAvg), msf(s.ProduceMax))
}

// Latency is one open-loop latency run and what its writer did.
type Latency struct {
	LoopResult
	Writer WriterStats
}

// latencyID is the event id of event i of a latency run: the sink maps it back to i.
func latencyID(prefix string, i int) string { return prefix + strconv.Itoa(i) }

func latencyIndex(prefix, id string) (int, bool) {
	rest, ok := strings.CutPrefix(id, prefix)
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(rest)
	return i, err == nil
}

// EndToEndLatency is P3: events POSTed to the receiver on schedule s, through Kafka and the
// dispatcher (ordered, the default) to sink; each latency from the event's due time to the sink
// receiving it.
func (e *Env) EndToEndLatency(ch Channel, sink *Sink, s Schedule) (Latency, error) {
	if err := s.check(); err != nil {
		return Latency{}, err
	}
	r, err := e.StartReceiver(ch)
	if err != nil {
		return Latency{}, err
	}
	defer r.Close()
	prefix := fmt.Sprintf("lat%d-", e.seq.Add(1))
	loop := newOpenLoop(s)
	sink.mu.Lock()
	sink.hook = func(id string, at time.Time) {
		if i, ok := latencyIndex(prefix, id); ok {
			loop.arrive(i, at)
		}
	}
	sink.mu.Unlock()
	defer func() { sink.mu.Lock(); sink.hook = nil; sink.mu.Unlock() }()

	uid := fmt.Sprintf("lat-%d", e.seq.Add(1))
	d, stop, err := e.RunDispatcher(ch, dispatcher.Channel{Subscribers: []v1beta1.SubscriberSpec{Subscriber(uid, sink.URL)}})
	if err != nil {
		return Latency{}, err
	}
	defer stop()
	if err := waitReady(d, uid, e.Within(30*time.Second)); err != nil {
		return Latency{}, err
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: max(s.MaxSenders, 1024)}}
	// The writer's first request fetches metadata; the schedule's warm-up does the rest.
	if err := send(client, r.URL, "warmup"); err != nil {
		return Latency{}, err
	}
	_ = receiverWriterStats(r.w)
	res, err := loop.run(func(i int) error { return send(client, r.URL, latencyID(prefix, i)) }, e.Within(30*time.Second))
	if err != nil {
		return Latency{}, fmt.Errorf("receiver -> subscriber: %w", err)
	}
	return Latency{LoopResult: res, Writer: receiverWriterStats(r.w)}, nil
}

// Producer is what DirectLatency writes with.
type Producer int

const (
	// ReceiverProducer is the receiver's Writer (acks=all, its batching), called directly.
	ReceiverProducer Producer = iota
	// KafkaGoWriter is a bare kafka-go Writer with acks=all, BatchSize 100 and the 1 ms
	// BatchTimeout the receiver used before issue 26: kafka-go's own per-partition batching.
	KafkaGoWriter
)

// DirectLatency is P3's baseline: records written by p, with no HTTP in front, and read by a
// partition reader per partition with the dispatcher's fetch settings, with no delivery behind,
// on the same schedule; latency from the event's due time to the read.
func (e *Env) DirectLatency(ch Channel, s Schedule, p Producer) (Latency, error) {
	if err := s.check(); err != nil {
		return Latency{}, err
	}
	var write func(ctx context.Context, m kafka.Message) error
	var stats func() WriterStats
	switch p {
	case KafkaGoWriter:
		w := &kafka.Writer{
			Addr: kafka.TCP(e.Brokers...), Topic: ch.Topic, Balancer: &kafka.RoundRobin{},
			RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, BatchSize: receiver.DefaultBatchSize,
		}
		defer func() { _ = w.Close() }()
		write = func(ctx context.Context, m kafka.Message) error { return w.WriteMessages(ctx, m) }
		stats = func() WriterStats { return writerStats(w.Stats()) }
	default:
		kc, err := kafkaconn.Parse(map[string][]byte{kafkaconn.KeyBrokers: []byte(joinBrokers(e.Brokers))})
		if err != nil {
			return Latency{}, fmt.Errorf("kafka config: %w", err)
		}
		w := receiver.NewWriter(kc, receiver.WriterOptions{})
		defer func() { _ = w.Close() }()
		write = func(ctx context.Context, m kafka.Message) error {
			m.Topic = ch.Topic
			return w.WriteMessages(ctx, m)
		}
		stats = func() WriterStats { return receiverWriterStats(w) }
	}
	prefix := fmt.Sprintf("d%d-", e.seq.Add(1))
	loop := newOpenLoop(s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var readers sync.WaitGroup
	defer readers.Wait()
	defer cancel()
	for part := range ch.Partitions {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: e.Brokers, Topic: ch.Topic, Partition: part,
			MinBytes: 1, MaxBytes: 10 << 20, MaxWait: dispatcher.DefaultMaxWait, StartOffset: kafka.LastOffset})
		readers.Add(1)
		go func() {
			defer readers.Done()
			defer func() { _ = r.Close() }()
			for {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					return
				}
				if i, ok := latencyIndex(prefix, string(m.Key)); ok {
					loop.arrive(i, time.Now())
				}
			}
		}()
	}
	// Readers starting at the end of the log need a moment to learn where the end is.
	time.Sleep(time.Second)
	if err := write(ctx, kafka.Message{Value: payload}); err != nil {
		return Latency{}, fmt.Errorf("direct writer warm-up: %w", err)
	}
	_ = stats()
	res, err := loop.run(func(i int) error {
		// The id is the key, so records spread over the partitions by its hash.
		id := latencyID(prefix, i)
		return write(ctx, kafka.Message{Key: []byte(id), Value: payload})
	}, e.Within(30*time.Second))
	if err != nil {
		return Latency{}, fmt.Errorf("direct writer -> reader: %w", err)
	}
	return Latency{LoopResult: res, Writer: stats()}, nil
}

// waitReady polls the dispatcher until the subscriber is Ready.
func waitReady(d *dispatcher.Dispatcher, uid string, budget time.Duration) error {
	deadline := time.Now().Add(budget)
	for time.Now().Before(deadline) {
		if s, ok := d.State(uid); ok && s.Ready == dispatcher.ReadyTrue {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	s, _ := d.State(uid)
	return fmt.Errorf("subscriber %s not Ready after %s (%s: %s)", uid, budget, s.Ready, s.Message)
}
