package receiver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
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
	// DefaultBatchTimeout bounds how long a record waits for others to share its produce request.
	// A partition writes one batch at a time, so under load the next batch fills while the
	// previous one is in flight; the timeout only costs latency when traffic is light.
	DefaultBatchTimeout = time.Millisecond
	// DefaultBatchSize is the most records in one produce request per partition. kafka-go
	// allocates room for this many records with every batch however few it holds (about
	// 150 bytes each): at 1000 each small batch of a few records cost a zeroed 150 KB, ~10% of
	// the receiver's CPU under 32 senders (make bench, P4 profile). A batch fills while the
	// previous one is in flight, so 100 still takes 100 records per partition and round trip.
	DefaultBatchSize = 100
	// headerSlack is room for the ce_* headers on top of a body of the maximum size.
	headerSlack = 64 << 10
)

// WriterOptions tune NewWriter; zero values take the defaults.
type WriterOptions struct {
	BatchTimeout time.Duration
	BatchSize    int
	// MaxBodyBytes is the largest event body the receiver accepts (its --max-body-bytes); the
	// writer takes records that large plus room for their headers. Default DefaultMaxBodyBytes.
	MaxBodyBytes int64
}

// Writer is the kafka-go Writer the receiver shares across all requests and channels, so
// concurrent requests to one partition go out in one produce request.
type Writer struct {
	*kafka.Writer
	transport *kafka.Transport
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
	err := w.Writer.WriteMessages(ctx, msgs...)
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
		err = w.Writer.WriteMessages(ctx, msgs...)
	}
	return err
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
	if opts.BatchTimeout <= 0 {
		opts.BatchTimeout = DefaultBatchTimeout
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultBatchSize
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	transport := kc.Transport()
	return &Writer{transport: transport, Writer: &kafka.Writer{
		Addr:      kafka.TCP(kc.Brokers...),
		Transport: transport,
		// The record key comes from the partitionkey extension: equal keys land on one
		// partition (the same FNV-1a hash as Sarama, which Knative's Kafka channels used);
		// records without a key are spread round-robin.
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		Async:        false,
		BatchTimeout: opts.BatchTimeout,
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
		return http.StatusServiceUnavailable, fmt.Sprintf("the channel's topic does not exist in Kafka: %v", err)
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
