package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/dispatcher"
)

// StartSink serves a Sink on 127.0.0.1; delay is how long each answer waits.
func StartSink(delay time.Duration) (*Sink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for the sink: %w", err)
	}
	s := &Sink{delay: delay, seen: map[string]struct{}{}}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	s.URL = "http://" + ln.Addr().String() + "/"
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Subscriber is a subscriber spec for sink with a fresh uid (so a fresh consumer group).
func Subscriber(uid, url string) v1beta1.SubscriberSpec {
	u := url
	return v1beta1.SubscriberSpec{UID: uid, Name: uid, Generation: 1, SubscriberURI: &u}
}

// RunDispatcher starts the real dispatcher library on ch; stop it with the returned function.
func (e *Env) RunDispatcher(ch Channel, c dispatcher.Channel) (*dispatcher.Dispatcher, func(), error) {
	d, err := dispatcher.New(dispatcher.Config{
		Brokers: e.Brokers, ChannelNamespace: Namespace, ChannelName: ch.Name, Topic: ch.Topic,
		Log: ProductionLog(),
		// The production defaults (session, drain, fetch wait), as the dispatcher binary runs.
	})
	if err != nil {
		return nil, nil, fmt.Errorf("creating the dispatcher: %w", err)
	}
	d.Update(c)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	return d, func() { cancel(); <-done }, nil
}

// ProductionLog is a logger that costs what the dispatcher's does in a pod (zap, JSON, info
// level) but writes nowhere: a Discard logger would hide the cost of building log context.
func ProductionLog() logr.Logger {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	return zapr.NewLogger(zap.New(zapcore.NewCore(enc, zapcore.AddSync(io.Discard), zapcore.InfoLevel)))
}

// errTimeout is returned when a measured run did not finish in its budget.
var errTimeout = errors.New("did not finish in time")

// wait waits for done or the budget.
func wait(done <-chan struct{}, budget time.Duration) error {
	select {
	case <-done:
		return nil
	case <-time.After(budget):
		return errTimeout
	}
}

// DispatcherRate measures the dispatcher delivering n records to sink: events per second from
// the first delivery to the last, so the group join is not counted (P6 counts it). A new
// subscriber starts at the end of the topic (as Knative subscriptions do), so the records are
// written once its group is Ready, in large batches that outpace the dispatcher.
func (e *Env) DispatcherRate(ch Channel, sink *Sink, n int, unordered bool, budget time.Duration) (float64, error) {
	return e.dispatcherRate(ch, sink, n, dispatcher.Channel{Unordered: unordered}, nil, budget)
}

// dispatcherRate is DispatcherRate for a channel in the delivery mode of c, its records keyed
// by keyOf (nil: no keys).
func (e *Env) dispatcherRate(ch Channel, sink *Sink, n int, c dispatcher.Channel, keyOf func(int) []byte, budget time.Duration) (float64, error) {
	done := sink.Expect(n)
	uid := fmt.Sprintf("rate-%d", e.seq.Add(1))
	c.Subscribers = []v1beta1.SubscriberSpec{Subscriber(uid, sink.URL)}
	if err := e.Prime(ch, c, uid); err != nil {
		return 0, err
	}
	if err := e.fill(ch, uid, n, keyOf); err != nil {
		return 0, err
	}
	_, stop, err := e.RunDispatcher(ch, c)
	if err != nil {
		return 0, err
	}
	defer stop()
	if err := wait(done, budget); err != nil {
		return 0, fmt.Errorf("dispatcher delivered %d of %d: %w", sink.Count(), n, err)
	}
	return rate(n, sink.Span()), nil
}

// Prime makes the subscribers of c Ready once, which commits their start (the end of the log),
// and stops the dispatcher again. Records produced afterwards are then read by the next
// dispatcher of c from Kafka alone, as the baselines read records produced before they start:
// a dispatcher measured while the bench still produces would share the cores with the
// producer, which no baseline does.
func (e *Env) Prime(ch Channel, c dispatcher.Channel, uids ...string) error {
	d, stop, err := e.RunDispatcher(ch, c)
	if err != nil {
		return err
	}
	defer stop()
	for _, uid := range uids {
		if err := waitReady(d, uid, e.Within(90*time.Second)); err != nil {
			return err
		}
	}
	return nil
}

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n-1) / d.Seconds()
}

// RawConsumeRate is baseline 1 of P1: a kafka-go group reader with the dispatcher's commit
// interval, reading n records and doing nothing with them.
func (e *Env) RawConsumeRate(ch Channel, n int, budget time.Duration) (float64, error) {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: e.Brokers, Topic: ch.Topic, GroupID: fmt.Sprintf("raw-%d", e.seq.Add(1)),
		StartOffset: kafka.FirstOffset, CommitInterval: dispatcher.DefaultCommitInterval,
		MaxWait: 500 * time.Millisecond, SessionTimeout: 6 * time.Second,
	})
	defer func() { _ = r.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	var first time.Time
	for i := 0; i < n; i++ {
		if _, err := r.FetchMessage(ctx); err != nil {
			return 0, fmt.Errorf("raw consume after %d of %d: %w", i, n, err)
		}
		if i == 0 {
			first = time.Now()
		}
	}
	return rate(n, time.Since(first)), nil
}

// RawPostRate is baseline 2 of P1: the same events as binary-mode CloudEvents POSTed by
// `senders` goroutines with plain net/http, no Kafka involved.
func (e *Env) RawPostRate(ch Channel, sink *Sink, n, senders int) (float64, error) {
	reqs, err := e.readAll(ch, n)
	if err != nil {
		return 0, err
	}
	done := sink.Expect(n)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: senders * 2}}
	work := make(chan kafka.Message)
	var wg sync.WaitGroup
	var firstErr error
	var mu sync.Mutex
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range work {
				if err := post(client, sink.URL, m); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
			}
		}()
	}
	for _, m := range reqs {
		work <- m
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	if err := wait(done, e.Within(10*time.Second)); err != nil {
		return 0, err
	}
	return rate(n, sink.Span()), nil
}

// binaryRequest is a record as a binary-mode CloudEvent request, headers copied as they are:
// ce_ headers become Ce- headers. It is all the POST baseline does per record.
func binaryRequest(url string, m kafka.Message) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(m.Value))
	if err != nil {
		return nil, err
	}
	for _, h := range m.Headers {
		switch {
		case h.Key == "content-type":
			req.Header.Set("Content-Type", string(h.Value))
		case strings.HasPrefix(h.Key, "ce_"):
			req.Header.Set("Ce-"+strings.TrimPrefix(h.Key, "ce_"), string(h.Value))
		}
	}
	return req, nil
}

// post sends a record as a binary-mode CloudEvent (binaryRequest).
func post(client *http.Client, url string, m kafka.Message) error {
	req, err := binaryRequest(url, m)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("posting: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("posting: status %d", resp.StatusCode)
	}
	return nil
}

// readAll reads the first n records of ch (setup for the HTTP baseline).
func (e *Env) readAll(ch Channel, n int) ([]kafka.Message, error) {
	var out []kafka.Message
	for p := 0; p < ch.Partitions && len(out) < n; p++ {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: e.Brokers, Topic: ch.Topic, Partition: p, MaxWait: 200 * time.Millisecond})
		last, err := lastOffset(e.Brokers, ch.Topic, p)
		if err != nil {
			_ = r.Close()
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		for off := int64(0); off < last && len(out) < n; off++ {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				cancel()
				_ = r.Close()
				return nil, fmt.Errorf("reading partition %d: %w", p, err)
			}
			out = append(out, m)
		}
		cancel()
		_ = r.Close()
	}
	if len(out) < n {
		return nil, fmt.Errorf("topic %s holds %d records, want %d", ch.Topic, len(out), n)
	}
	return out, nil
}

func lastOffset(brokers []string, topic string, p int) (int64, error) {
	conn, err := kafka.DialLeader(context.Background(), "tcp", brokers[0], topic, p)
	if err != nil {
		return 0, fmt.Errorf("dialing the leader of %s/%d: %w", topic, p, err)
	}
	defer func() { _ = conn.Close() }()
	return conn.ReadLastOffset()
}

// NaiveRate is P7: the loop a user writes first — fetch one record, POST it, commit it, next.
func (e *Env) NaiveRate(ch Channel, sink *Sink, n int, budget time.Duration) (float64, error) {
	done := sink.Expect(n)
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: e.Brokers, Topic: ch.Topic, GroupID: fmt.Sprintf("naive-%d", e.seq.Add(1)),
		StartOffset: kafka.FirstOffset, SessionTimeout: 6 * time.Second, MaxWait: 500 * time.Millisecond,
	})
	defer func() { _ = r.Close() }()
	client := &http.Client{}
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	start := time.Time{}
	got := 0
	for got < n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			break
		}
		if start.IsZero() {
			start = time.Now()
		}
		if err := post(client, sink.URL, m); err != nil {
			return 0, err
		}
		if err := r.CommitMessages(ctx, m); err != nil {
			break
		}
		got++
	}
	select {
	case <-done:
	default:
	}
	if got < 2 {
		return 0, fmt.Errorf("naive loop handled %d records", got)
	}
	// A budget cut short still gives a rate: the loop's speed is steady.
	return rate(got, time.Since(start)), nil
}

// SerialPostRate is P2's practical bound: `loops` goroutines each POSTing n/loops records one
// after the other to sink, as ordered delivery over that many partitions does at best.
func (e *Env) SerialPostRate(ch Channel, sink *Sink, n, loops int) (float64, error) {
	reqs, err := e.readAll(ch, n)
	if err != nil {
		return 0, err
	}
	done := sink.Expect(n)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: loops * 2}}
	var wg sync.WaitGroup
	errs := make(chan error, loops)
	for l := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := l; i < n; i += loops {
				if err := post(client, sink.URL, reqs[i]); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	if err := wait(done, e.Within(10*time.Second)); err != nil {
		return 0, err
	}
	return rate(n, sink.Span()), nil
}
