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
}

// StartReceiver serves ch with the production writer settings (acks=all, 1 ms batch timeout).
func (e *Env) StartReceiver(ch Channel) (*Receiver, error) {
	kc, err := kafkaconn.Parse(map[string][]byte{kafkaconn.KeyBrokers: []byte(joinBrokers(e.Brokers))})
	if err != nil {
		return nil, fmt.Errorf("kafka config: %w", err)
	}
	idx := receiver.NewIndex()
	idx.SetChannel(receiver.Channel{Namespace: Namespace, Name: ch.Name, Topic: ch.Topic, Ready: true})
	r, err := receiver.New(receiver.Config{Channels: idx, Writer: receiver.NewWriter(kc, receiver.WriterOptions{}), Kafka: kc, Log: logr.Discard()})
	if err != nil {
		return nil, fmt.Errorf("creating the receiver: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for the receiver: %w", err)
	}
	go func() { _ = r.Serve(ln) }()
	return &Receiver{URL: "http://" + ln.Addr().String() + naming.ChannelPath(Namespace, ch.Name), r: r}, nil
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

// WriterRate is P4's baseline: a raw kafka-go Writer tuned like the receiver's (acks=all,
// 1 ms batch timeout, batch size 1000), `senders` goroutines each writing one record at a time.
func (e *Env) WriterRate(ch Channel, n, senders int) (float64, error) {
	return e.WriterRateData(ch, n, senders, payload)
}

// WriterRateData is WriterRate with records carrying data (P4b: 20 KB). BatchBytes is the
// receiver's body limit (the receiver adds a little header room), so large records batch about
// as they do there.
func (e *Env) WriterRateData(ch Channel, n, senders int, data []byte) (float64, error) {
	w := &kafka.Writer{
		Addr: kafka.TCP(e.Brokers...), Topic: ch.Topic, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: receiver.DefaultBatchTimeout, BatchSize: receiver.DefaultBatchSize,
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

// paced calls fire(i) n times at `perSec`, on schedule (not after the previous call returns),
// so a slow answer does not lower the offered rate.
func paced(n, perSec int, fire func(i int)) {
	interval := time.Second / time.Duration(perSec)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func() { defer wg.Done(); fire(i) }()
	}
	wg.Wait()
}

// EndToEndLatency is P3: events POSTed to the receiver at perSec, latency measured from just
// before the POST to the subscriber receiving the event through Kafka and the dispatcher.
func (e *Env) EndToEndLatency(ch Channel, sink *Sink, n, perSec int) (Latencies, error) {
	r, err := e.StartReceiver(ch)
	if err != nil {
		return Latencies{}, err
	}
	defer r.Close()
	var mu sync.Mutex
	sentAt := make(map[string]time.Time, n)
	var lat []time.Duration
	sink.mu.Lock()
	sink.hook = func(id string, at time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if t, ok := sentAt[id]; ok {
			lat = append(lat, at.Sub(t))
			delete(sentAt, id)
		}
	}
	sink.mu.Unlock()
	defer func() { sink.mu.Lock(); sink.hook = nil; sink.mu.Unlock() }()

	uid := fmt.Sprintf("lat-%d", e.seq.Add(1))
	d, stop, err := e.RunDispatcher(ch, dispatcher.Channel{Subscribers: []v1beta1.SubscriberSpec{Subscriber(uid, sink.URL)}})
	if err != nil {
		return Latencies{}, err
	}
	defer stop()
	if err := waitReady(d, uid, e.Within(30*time.Second)); err != nil {
		return Latencies{}, err
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	// Warm-up events are not counted: the first requests open connections and fetch metadata.
	for i := range 20 {
		_ = send(client, r.URL, "warm-"+strconv.Itoa(i))
	}
	done := sink.Expect(n)
	var failed atomic.Int64
	paced(n, perSec, func(i int) {
		id := "lat-" + strconv.Itoa(i)
		mu.Lock()
		sentAt[id] = time.Now()
		mu.Unlock()
		if err := send(client, r.URL, id); err != nil {
			failed.Add(1)
		}
	})
	if f := failed.Load(); f > 0 {
		return Latencies{}, fmt.Errorf("%d of %d posts failed", f, n)
	}
	if err := wait(done, e.Within(30*time.Second)); err != nil {
		return Latencies{}, fmt.Errorf("latency run delivered %d of %d: %w", sink.Count(), n, err)
	}
	mu.Lock()
	defer mu.Unlock()
	return percentiles(lat), nil
}

// DirectLatency is P3's baseline: a kafka-go Writer (same settings as the receiver's) and a
// partition reader per partition, at the same rate; latency from before the write to the read.
func (e *Env) DirectLatency(ch Channel, n, perSec int) (Latencies, error) {
	w := &kafka.Writer{
		Addr: kafka.TCP(e.Brokers...), Topic: ch.Topic, Balancer: &kafka.RoundRobin{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: receiver.DefaultBatchTimeout, BatchSize: receiver.DefaultBatchSize,
	}
	defer func() { _ = w.Close() }()
	var mu sync.Mutex
	sentAt := make(map[string]time.Time, n)
	lat := make([]time.Duration, 0, n)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan struct{}, n)
	var readers sync.WaitGroup
	for p := range ch.Partitions {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: e.Brokers, Topic: ch.Topic, Partition: p,
			MaxWait: dispatcher.DefaultMaxWait, StartOffset: kafka.LastOffset})
		readers.Add(1)
		go func() {
			defer readers.Done()
			defer func() { _ = r.Close() }()
			for {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					return
				}
				now := time.Now()
				id := string(m.Key)
				mu.Lock()
				if t, ok := sentAt[id]; ok {
					lat = append(lat, now.Sub(t))
					delete(sentAt, id)
					got <- struct{}{}
				}
				mu.Unlock()
			}
		}()
	}
	// Readers starting at the end of the log need a moment to learn where the end is.
	time.Sleep(time.Second)
	_ = w.WriteMessages(ctx, kafka.Message{Value: payload})
	var failed atomic.Int64
	paced(n, perSec, func(i int) {
		id := "d-" + strconv.Itoa(i)
		mu.Lock()
		sentAt[id] = time.Now()
		mu.Unlock()
		if err := w.WriteMessages(ctx, kafka.Message{Key: []byte(id), Value: payload}); err != nil {
			failed.Add(1)
		}
	})
	deadline := time.After(e.Within(30 * time.Second))
	for range n - int(failed.Load()) {
		select {
		case <-got:
		case <-deadline:
			return Latencies{}, fmt.Errorf("direct loop read %d of %d: %w", len(lat), n, errTimeout)
		}
	}
	cancel()
	readers.Wait()
	if f := failed.Load(); f > 0 {
		return Latencies{}, fmt.Errorf("%d of %d writes failed", f, n)
	}
	return percentiles(lat), nil
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
