package receiver

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kafkachannel/kafkachannel/internal/kafkatest"
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

func TestUnknownTopic(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{kafka.UnknownTopicOrPartition, true},
		{kafka.WriteErrors{nil, kafka.UnknownTopicOrPartition}, true},
		{kafka.WriteErrors{kafka.UnknownTopicOrPartition, kafka.LeaderNotAvailable}, false},
		{kafka.WriteErrors{nil, nil}, false},
		{kafka.LeaderNotAvailable, false},
	}
	for _, tt := range tests {
		if got := unknownTopic(tt.err); got != tt.want {
			t.Errorf("unknownTopic(%v) = %v, want %v", tt.err, got, tt.want)
		}
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
