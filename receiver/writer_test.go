package receiver

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
)

// A channel created while the receiver runs must take events as soon as its topic exists, not
// once kafka-go's metadata cache happens to refresh (30 s).
func TestWriterSeesTopicsCreatedAfterItStarted(t *testing.T) {
	k := kafkatest.Start(t)
	w := NewWriter(kafkaConfig(t, k), WriterOptions{})
	defer w.Close()
	// Shorter than the Transport's 30 s metadata TTL: waiting for the cache would fail the write.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()

	createTopic(t, k, "early", 1)
	if err := w.WriteMessages(ctx, kafka.Message{Topic: "early", Value: []byte("1")}); err != nil {
		t.Fatalf("first topic: %v", err)
	}
	createTopic(t, k, "late", 2)
	if err := w.WriteMessages(ctx, kafka.Message{Topic: "late", Value: []byte("2")}); err != nil {
		t.Fatalf("topic created after the writer's first metadata fetch: %v", err)
	}
	if kafkatest.External() {
		return // a real broker may auto-create topics; the in-process one never does
	}
	// A topic that really does not exist still fails.
	if err := w.WriteMessages(ctx, kafka.Message{Topic: "never-created", Value: []byte("3")}); err == nil {
		t.Error("a write to a missing topic succeeded")
	}
}

func TestStaleMetadata(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{kafka.UnknownTopicOrPartition, true},
		{kafka.WriteErrors{nil, kafka.UnknownTopicOrPartition}, true},
		{kafka.WriteErrors{kafka.UnknownTopicOrPartition, kafka.LeaderNotAvailable}, true},
		{kafka.WriteErrors{nil, kafka.NotLeaderForPartition}, true},
		{kafka.WriteErrors{kafka.NotLeaderForPartition, kafka.MessageSizeTooLarge}, false},
		{kafka.WriteErrors{nil, nil}, false},
		{kafka.LeaderNotAvailable, true},
		{kafka.NotEnoughReplicas, false},
		{context.DeadlineExceeded, false},
	}
	for _, tt := range tests {
		if got := staleMetadata(tt.err); got != tt.want {
			t.Errorf("staleMetadata(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestRefusedKeepsOnlyWhatWasNotAcknowledged(t *testing.T) {
	msgs := []kafka.Message{{Value: []byte("a")}, {Value: []byte("b")}, {Value: []byte("c")}}
	got := refused(msgs, kafka.WriteErrors{nil, kafka.NotLeaderForPartition, nil})
	if len(got) != 1 || string(got[0].Value) != "b" {
		t.Errorf("refused = %v, want only b", got)
	}
	if got := refused(msgs, kafka.LeaderNotAvailable); len(got) != 3 {
		t.Errorf("refused on a whole-write error = %d messages, want all 3", len(got))
	}
}

// Concurrent first writes to a new topic all succeed: every one of them refreshes the cache.
func TestWriterConcurrentFirstWritesToNewTopics(t *testing.T) {
	k := kafkatest.Start(t)
	w := NewWriter(kafkaConfig(t, k), WriterOptions{})
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	createTopic(t, k, "early", 1)
	if err := w.WriteMessages(ctx, kafka.Message{Topic: "early", Value: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 5; round++ {
		topic := "late" + string(rune('a'+round))
		createTopic(t, k, topic, 4)
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := w.WriteMessages(ctx, kafka.Message{Topic: topic, Value: []byte("2")}); err != nil {
					t.Errorf("round %d: %v", round, err)
				}
			}()
		}
		wg.Wait()
	}
}

// When a partition's leader moves (its broker died, or a rolling restart moved it), the write
// must go to the new leader at once, not fail with Not Leader For Partition until kafka-go's
// metadata cache expires (30 s): a real cluster elects a new leader in seconds, and each of
// those failures is a 503 to a sender.
func TestWriterFollowsAMovedLeader(t *testing.T) {
	if kafkatest.External() {
		t.Skip("moves a partition of the in-process cluster")
	}
	k := kafkatest.Start(t, kfake.NumBrokers(3))
	createTopic(t, k, "moving", 1)
	w := NewWriter(kafkaConfig(t, k), WriterOptions{})
	defer w.Close()
	// Shorter than the Transport's 30 s metadata TTL: waiting for the cache would fail it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, kafka.Message{Topic: "moving", Value: []byte("before")}); err != nil {
		t.Fatalf("first write: %v", err)
	}
	for move := range 3 {
		// A fresh Transport: the default one caches metadata too.
		md, err := (&kafka.Client{Addr: kafka.TCP(k.Brokers...), Transport: &kafka.Transport{}}).Metadata(ctx, &kafka.MetadataRequest{Topics: []string{"moving"}})
		if err != nil {
			t.Fatal(err)
		}
		leader := md.Topics[0].Partitions[0].Leader.ID
		next := int32((leader + 1) % 3)
		if err := k.Cluster.MoveTopicPartition("moving", 0, next); err != nil {
			t.Fatalf("moving the partition to node %d: %v", next, err)
		}
		if err := w.WriteMessages(ctx, kafka.Message{Topic: "moving", Value: []byte("after")}); err != nil {
			t.Fatalf("write after move %d (leader %d -> %d): %v", move+1, leader, next, err)
		}
	}
}

// While a partition's produce request is in flight, the records that arrive must go together in
// its next request. kafka-go's Writer alone queued a batch every BatchTimeout (1 ms) behind the
// one in flight and sent them one request each: a partition whose round trip is longer than
// that fell further behind with every request (issue 26: a second of latency at 1,000/s on one
// loaded Apache Kafka broker).
func TestWriterSendsWhatArrivedDuringARequestInTheNext(t *testing.T) {
	if kafkatest.External() {
		t.Skip("holds the in-process cluster's produce requests")
	}
	k := kafkatest.Start(t)
	createTopic(t, k, "busy", 1)
	w := NewWriter(kafkaConfig(t, k), WriterOptions{})
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, kafka.Message{Topic: "busy", Value: []byte("warm")}); err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		requests int
	)
	held := make(chan struct{})
	release := make(chan struct{})
	// kfake serves every request from one loop: holding the first produce request here holds
	// the broker, as a slow one would.
	k.Cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		k.Cluster.KeepControl()
		mu.Lock()
		requests++
		first := requests == 1
		mu.Unlock()
		if first {
			close(held)
			<-release
		}
		return nil, nil, false
	})
	var wg sync.WaitGroup
	errs := make(chan error, 21)
	write := func(v string) {
		defer wg.Done()
		errs <- w.WriteMessages(ctx, kafka.Message{Topic: "busy", Value: []byte(v)})
	}
	wg.Add(1)
	go write("first")
	select {
	case <-held:
	case <-ctx.Done():
		t.Fatal("the first produce request never reached the broker")
	}
	// Twenty records arrive 2 ms apart while the first request is held: an open-loop sender.
	for i := range 20 {
		wg.Add(1)
		go write(strconv.Itoa(i))
		time.Sleep(2 * time.Millisecond)
	}
	// Room for the last writes to reach the partition's queue before the broker answers.
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	// One request held, one with the twenty; a third at most for a write that was late to the
	// queue on a loaded machine.
	if requests > 3 {
		t.Errorf("%d produce requests for 21 records on one partition, want <= 3: the records that arrived during a request were not sent together in the next", requests)
	}
}
