package receiver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
	metadataapi "github.com/segmentio/kafka-go/protocol/metadata"

	"github.com/kafkachannel/kafkachannel/internal/kafkaconn"
)

// MessageWriter writes records to Kafka and returns only once Kafka has taken them (or not).
// *kafka.Writer from NewWriter is the production one.
type MessageWriter interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
	Close() error
}

// Writer defaults. kafka-go's own (BatchTimeout 1 s, RequiredAcks none) would make every
// request wait a second and answer 202 for records Kafka never confirmed.
const (
	// DefaultBatchTimeout is how long the first record for an idle partition waits for others
	// to share its produce request (Kafka's linger.ms). None: a record for an idle partition
	// is sent at once, and records that come while a partition's request is in flight go
	// together in its next one, so batches grow with the load by themselves.
	DefaultBatchTimeout = time.Duration(0)
	// DefaultBatchSize is the most records in one produce request per partition. kafka-go
	// allocates room for this many records with every batch however few it holds (about
	// 150 bytes each): at 1000 each small batch of a few records cost a zeroed 150 KB, ~10% of
	// the receiver's CPU under 32 senders (make bench, P4 profile). Records beyond it wait for
	// the partition's next request.
	DefaultBatchSize = 100
	// headerSlack is room for the ce_* headers on top of a body of the maximum size.
	headerSlack = 64 << 10
	// sendNow is the inner kafka-go Writer's batch timeout: the Writer sends what it is handed
	// as one batch at once (the records of one call are added under one lock, before the timer
	// can fire). 0 would mean kafka-go's default of a second.
	sendNow = time.Nanosecond
)

// WriterOptions tune NewWriter; zero values take the defaults.
type WriterOptions struct {
	// BatchTimeout is how long the first record for an idle partition waits for more before
	// its produce request is sent (default DefaultBatchTimeout, none).
	BatchTimeout time.Duration
	// BatchSize caps the records of one produce request per partition (default
	// DefaultBatchSize).
	BatchSize int
	// MaxBodyBytes is the largest event body the receiver accepts (its --max-body-bytes); the
	// writer takes records that large plus room for their headers. Default DefaultMaxBodyBytes.
	MaxBodyBytes int64
}

// Writer is the producer the receiver shares across all requests and channels, so concurrent
// requests to one partition go out in one produce request.
//
// A kafka-go Writer alone sends one request at a time per partition and queues a separate
// batch every BatchTimeout while one is in flight; queued batches are never merged. A partition
// whose produce round trip R is longer than the batch timeout T then drains at most one batch per
// R while a new one forms every T: above 1/(R-T) records a second per partition (125/s with a
// 9 ms round trip and T = 1 ms) the queue grows without bound, and so does the latency (issue 26:
// a second at 1,000/s on one loaded Apache Kafka broker). Writer keeps a queue per partition in
// front of it instead: one request in flight per partition, and everything that arrived
// meanwhile (up to BatchSize) goes in the next, so a slower broker makes larger requests, not a
// longer queue.
type Writer struct {
	*kafka.Writer
	transport *kafka.Transport
	balancer  kafka.Balancer
	linger    time.Duration
	batchSize int

	mu     sync.Mutex
	queues map[topicPartition]*partitionQueue
	waits  waitStats
}

type topicPartition struct {
	topic     string
	partition int
}

// partitionQueue is the records waiting for one partition's next produce request.
type partitionQueue struct {
	pending []*pendingWrite
	// sending is true while a goroutine sends this queue's requests.
	sending bool
}

// pendingWrite is the records of one WriteMessages call for one partition.
type pendingWrite struct {
	ctx   context.Context
	msgs  []kafka.Message
	since time.Time
	done  chan struct{}
	// err is the write's outcome: nil, a WriteErrors aligned with msgs, or another error for all.
	err error
}

// waitStats sums how long records waited in the partition queues before their request was sent.
type waitStats struct {
	n        int64
	sum, max time.Duration
}

// WriteMessages writes and waits for Kafka's acknowledgement. kafka-go's Transport serves topic
// metadata from a cache refreshed every MetadataTTL (30 s), and its Writer retries on that
// cached metadata. Two answers mean the cache is stale, not that Kafka cannot take the event:
// UnknownTopicOrPartition for a channel created after the receiver started (the receiver only
// writes to channels whose topic the manager reported ready), and NotLeaderForPartition or
// LeaderNotAvailable after a partition's leader moved (a broker died or restarted; a real
// cluster elects a new leader in seconds). For those the receiver refreshes the topic's metadata
// and writes the refused messages again, until ctx (the produce timeout) ends, instead of
// answering 503 for as long as the cache lives.
func (w *Writer) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	err := w.write(ctx, msgs)
	for round := 0; staleMetadata(err) && len(msgs) > 0 && ctx.Err() == nil; round++ {
		if round > 0 {
			// While a leader is being elected, metadata names none yet: ask again shortly.
			select {
			case <-ctx.Done():
				return err
			case <-time.After(100 * time.Millisecond):
			}
		}
		topic := msgs[0].Topic
		if topic == "" {
			topic = w.Topic
		}
		if rerr := w.refresh(ctx, topic); rerr != nil {
			return err
		}
		// Only what was refused: the others are acknowledged and would be written twice.
		msgs = refused(msgs, err)
		err = w.write(ctx, msgs)
	}
	return err
}

// write hands each record to its partition's queue and waits for Kafka's acknowledgement of
// all of them, or for ctx.
func (w *Writer) write(ctx context.Context, msgs []kafka.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	groups := map[topicPartition][]int{}
	var order []topicPartition
	for i := range msgs {
		topic := msgs[i].Topic
		if topic == "" {
			topic = w.Topic
		}
		n, err := w.partitions(ctx, topic)
		if err != nil {
			return err
		}
		key := topicPartition{topic, w.balancer.Balance(msgs[i], partitionList(n)...)}
		if _, ok := groups[key]; !ok {
			order = append(order, key)
		}
		groups[key] = append(groups[key], i)
	}
	writes := make([]*pendingWrite, 0, len(order))
	for _, key := range order {
		pw := &pendingWrite{ctx: ctx, since: time.Now(), done: make(chan struct{})}
		for _, i := range groups[key] {
			// A copy carries the choice to the inner Writer (presetPartition); the caller's
			// records stay as they were.
			m := msgs[i]
			m.Partition = key.partition
			pw.msgs = append(pw.msgs, m)
		}
		w.enqueue(key, pw)
		writes = append(writes, pw)
	}
	for _, pw := range writes {
		select {
		case <-pw.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if len(writes) == 1 {
		return writes[0].err
	}
	// Records of several partitions: one error per record, in the caller's order.
	werrs := make(kafka.WriteErrors, len(msgs))
	failed := false
	for k, key := range order {
		err := writes[k].err
		for j, i := range groups[key] {
			var we kafka.WriteErrors
			if errors.As(err, &we) && len(we) == len(groups[key]) {
				werrs[i] = we[j]
			} else {
				werrs[i] = err
			}
			failed = failed || werrs[i] != nil
		}
	}
	if !failed {
		return nil
	}
	return werrs
}

func (w *Writer) enqueue(key topicPartition, pw *pendingWrite) {
	w.mu.Lock()
	defer w.mu.Unlock()
	q := w.queues[key]
	if q == nil {
		q = &partitionQueue{}
		w.queues[key] = q
	}
	q.pending = append(q.pending, pw)
	if !q.sending {
		q.sending = true
		go w.send(key, q)
	}
}

// send writes q's records, one produce request at a time, until q is empty.
func (w *Writer) send(key topicPartition, q *partitionQueue) {
	if w.linger > 0 {
		time.Sleep(w.linger)
	}
	for {
		w.mu.Lock()
		var batch []*pendingWrite
		n := 0
		for len(q.pending) > 0 && (n == 0 || n+len(q.pending[0].msgs) <= w.batchSize) {
			// Writes whose caller has given up are not sent: their 503 is already answered.
			if pw := q.pending[0]; pw.ctx.Err() == nil {
				batch = append(batch, pw)
				n += len(pw.msgs)
			}
			q.pending = q.pending[1:]
		}
		if len(batch) == 0 {
			q.sending = false
			if len(q.pending) == 0 {
				delete(w.queues, key)
			}
			w.mu.Unlock()
			return
		}
		now := time.Now()
		for _, pw := range batch {
			d := now.Sub(pw.since)
			w.waits.n++
			w.waits.sum += d
			w.waits.max = max(w.waits.max, d)
		}
		w.mu.Unlock()
		w.sendBatch(batch, n)
	}
}

// sendBatch writes the records of batch in one kafka-go call (one produce request for the
// partition) and hands each write its outcome.
func (w *Writer) sendBatch(batch []*pendingWrite, n int) {
	msgs := make([]kafka.Message, 0, n)
	// The request lives as long as the longest-waiting caller wants it to; each caller still
	// returns at its own deadline.
	var deadline time.Time
	bounded := true
	for _, pw := range batch {
		msgs = append(msgs, pw.msgs...)
		d, ok := pw.ctx.Deadline()
		bounded = bounded && ok
		if d.After(deadline) {
			deadline = d
		}
	}
	// One caller giving up (its client went away) must not cancel the others' records.
	wctx, cancel := context.WithoutCancel(batch[0].ctx), func() {}
	if bounded {
		wctx, cancel = context.WithDeadline(wctx, deadline)
	}
	defer cancel()
	err := w.Writer.WriteMessages(wctx, msgs...)
	var werrs kafka.WriteErrors
	split := errors.As(err, &werrs) && len(werrs) == len(msgs)
	at := 0
	for _, pw := range batch {
		switch {
		case err == nil:
		case split:
			pw.err = nil
			for _, e := range werrs[at : at+len(pw.msgs)] {
				if e != nil {
					pw.err = append(kafka.WriteErrors(nil), werrs[at:at+len(pw.msgs)]...)
					break
				}
			}
		default:
			pw.err = err
		}
		at += len(pw.msgs)
		close(pw.done)
	}
}

// partitions is the topic's partition count, from the Transport's metadata cache as kafka-go's
// Writer gets it.
func (w *Writer) partitions(ctx context.Context, topic string) (int, error) {
	r, err := w.transport.RoundTrip(ctx, w.Addr, &metadataapi.Request{TopicNames: []string{topic}})
	if err != nil {
		return 0, err
	}
	for _, t := range r.(*metadataapi.Response).Topics {
		if t.Name == topic {
			if t.ErrorCode != 0 {
				return 0, kafka.Error(t.ErrorCode)
			}
			if len(t.Partitions) == 0 {
				return 0, kafka.LeaderNotAvailable
			}
			return len(t.Partitions), nil
		}
	}
	return 0, kafka.UnknownTopicOrPartition
}

// partitionList is 0..n-1, what a kafka-go Balancer chooses from.
func partitionList(n int) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	return p
}

// QueueWaits reports, since the last call, how many records were sent and how long they waited
// in the partition queues before their produce request started (the wait behind the previous
// request, and BatchTimeout).
func (w *Writer) QueueWaits() (n int64, avg, maxWait time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.waits
	w.waits = waitStats{}
	if s.n > 0 {
		avg = s.sum / time.Duration(s.n)
	}
	return s.n, avg, s.max
}

// presetPartition makes the inner kafka-go Writer put each record on the partition Writer
// chose for it (Message.Partition), so a record goes where its queue sends it.
type presetPartition struct{}

func (presetPartition) Balance(msg kafka.Message, partitions ...int) int {
	if msg.Partition < len(partitions) {
		return msg.Partition
	}
	// The topic shrank between the choice and the write (Kafka never removes partitions, but
	// a deleted and recreated topic can have fewer): the record still goes somewhere valid.
	return msg.Partition % len(partitions)
}

// staleMetadata reports whether a write failed only because kafka-go's cached metadata is out
// of date: from the metadata lookup (returned as is) or from the produce response (inside
// WriteErrors).
func staleMetadata(err error) bool {
	stale := func(e error) bool {
		return errors.Is(e, kafka.UnknownTopicOrPartition) || errors.Is(e, kafka.NotLeaderForPartition) ||
			errors.Is(e, kafka.LeaderNotAvailable)
	}
	var werrs kafka.WriteErrors
	if !errors.As(err, &werrs) {
		return stale(err)
	}
	found := false
	for _, e := range werrs {
		if e == nil {
			continue
		}
		if !stale(e) {
			return false
		}
		found = true
	}
	return found
}

// refused keeps the messages a write with WriteErrors did not get acknowledged; all of them
// for any other error.
func refused(msgs []kafka.Message, err error) []kafka.Message {
	var werrs kafka.WriteErrors
	if !errors.As(err, &werrs) || len(werrs) != len(msgs) {
		return msgs
	}
	var out []kafka.Message
	for i, e := range werrs {
		if e != nil {
			out = append(out, msgs[i])
		}
	}
	return out
}

// refresh asks the brokers for the topic's metadata and makes kafka-go's Transport reload its
// whole cache (new leaders included). The Transport answers metadata requests from its cache
// unless one allows auto-creation and names a topic the cache does not know; then it asks the
// broker and reloads. So the request also names noSuchTopic, a name Kafka refuses as invalid
// (it can never be created, whatever auto.create.topics.enable says), which the cache never
// knows. The channel's topic exists (its channel is ready), so nothing is created. (Only if a
// channel were deleted in the instant between the receiver's readiness check and this call
// could a broker with auto.create.topics.enable recreate its topic with broker defaults.)
// noSuchTopic is a topic name Kafka rejects as invalid ("." and ".." are reserved).
const noSuchTopic = "."

func (w *Writer) refresh(ctx context.Context, topic string) error {
	r, err := w.transport.RoundTrip(ctx, w.Addr, &metadataapi.Request{TopicNames: []string{topic, noSuchTopic}, AllowAutoTopicCreation: true})
	if err != nil {
		return err
	}
	for _, t := range r.(*metadataapi.Response).Topics {
		if t.Name == topic && t.ErrorCode == 0 {
			return nil
		}
	}
	return kafka.UnknownTopicOrPartition
}

// NewWriter returns the Writer the receiver shares across all requests and channels.
func NewWriter(kc *kafkaconn.Config, opts WriterOptions) *Writer {
	if opts.BatchTimeout < 0 {
		opts.BatchTimeout = DefaultBatchTimeout
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultBatchSize
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	transport := kc.Transport()
	return &Writer{transport: transport, linger: opts.BatchTimeout, batchSize: opts.BatchSize, queues: map[topicPartition]*partitionQueue{},
		// The record key comes from the partitionkey extension: equal keys land on one
		// partition (the same FNV-1a hash as Sarama, which Knative's Kafka channels used);
		// records without a key are spread round-robin.
		balancer: &kafka.Hash{},
		Writer: &kafka.Writer{
			Addr:         kafka.TCP(kc.Brokers...),
			Transport:    transport,
			Balancer:     presetPartition{},
			RequiredAcks: kafka.RequireAll,
			Async:        false,
			BatchTimeout: sendNow,
			BatchSize:    opts.BatchSize,
			BatchBytes:   opts.MaxBodyBytes + headerSlack,
			// Retries cover leader moves; the receiver's produce timeout bounds the total wait.
			MaxAttempts:     10,
			WriteBackoffMin: 10 * time.Millisecond,
			WriteBackoffMax: 500 * time.Millisecond,
			// The manager creates topics with the channel's partitions and retention; a record for a
			// missing topic must fail, not create a topic with broker defaults.
			AllowAutoTopicCreation: false,
		}}
}

// writeFailure turns a failed write into a status code and a reason for the client: 503 when
// Kafka is unreachable, slow or says to retry, 413 when the record is too large, 500 when Kafka
// refused it for good.
func writeFailure(err error, timeout time.Duration, kc *kafkaconn.Config) (int, string) {
	var werrs kafka.WriteErrors
	if errors.As(err, &werrs) {
		for _, e := range werrs {
			if e != nil {
				err = e
				break
			}
		}
	}
	explained := err
	if kc != nil {
		explained = kc.Explain(err)
	}
	var tooLarge kafka.MessageTooLargeError
	var kerr kafka.Error
	var nerr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, fmt.Sprintf("Kafka did not acknowledge the event within %s: %v", timeout, explained)
	case errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, "the request was cancelled before Kafka acknowledged the event"
	case errors.As(err, &tooLarge), errors.Is(err, kafka.MessageSizeTooLarge), errors.Is(err, kafka.RecordListTooLarge):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("Kafka refused the event as too large: %v", err)
	case errors.Is(err, kafka.UnknownTopicOrPartition):
		// Only the view of the broker that answered: the channel is ready, so the topic was
		// created; a broker that just started, or one cut off from a controller quorum that lost
		// its majority, answers this for a topic that is there.
		return http.StatusServiceUnavailable, fmt.Sprintf("the Kafka broker that answered does not know the channel's topic (its own view, e.g. while the cluster has no controller quorum; retry): %v", err)
	case errors.Is(err, kafkaconn.ErrAuthentication), errors.Is(explained, kafkaconn.ErrAuthentication):
		return http.StatusServiceUnavailable, fmt.Sprintf("writing to Kafka: %v", explained)
	case errors.As(err, &kerr):
		if kerr.Temporary() {
			return http.StatusServiceUnavailable, fmt.Sprintf("Kafka is temporarily unable to take the event: %v", explained)
		}
		return http.StatusInternalServerError, fmt.Sprintf("Kafka refused the event: %v", explained)
	case errors.Is(err, io.ErrClosedPipe):
		return http.StatusServiceUnavailable, "the receiver is shutting down"
	case errors.As(err, &nerr), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return http.StatusServiceUnavailable, fmt.Sprintf("Kafka is unavailable: %v", explained)
	}
	// Unknown failures are most likely a connection problem too; a 503 tells senders to retry.
	return http.StatusServiceUnavailable, fmt.Sprintf("writing to Kafka failed: %v", explained)
}
