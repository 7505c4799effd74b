package replay

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/environments/poll"
)

// topicWithRecords makes a 2-partition topic with 10 records in each, record i of a partition
// stamped t0 + i seconds.
func topicWithRecords(t *testing.T, k *kafkatest.Kafka, topic string, t0 time.Time) *kafka.Client {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(k.Brokers...), Timeout: 10 * time.Second}
	ctx := context.Background()
	res, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: 2, ReplicationFactor: 1}}})
	if err != nil || res.Errors[topic] != nil {
		t.Fatalf("creating topic: %v %v", err, res)
	}
	w := &kafka.Writer{Addr: kafka.TCP(k.Brokers...), Topic: topic, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll,
		Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { p, _ := strconv.Atoi(string(m.Key)); return p })}
	defer w.Close()
	for p := 0; p < 2; p++ {
		for i := 0; i < 10; i++ {
			if err := w.WriteMessages(ctx, kafka.Message{Key: []byte(strconv.Itoa(p)), Value: []byte("v"), Time: t0.Add(time.Duration(i) * time.Second)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return c
}

func TestResolve(t *testing.T) {
	k := kafkatest.Start(t)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	c := topicWithRecords(t, k, "ns.resolve", t0)
	ctx := context.Background()
	parts, err := Partitions(ctx, c, "ns.resolve")
	if err != nil || len(parts) != 2 {
		t.Fatalf("partitions %v %v", parts, err)
	}
	cases := []struct {
		name   string
		target Target
		want   int64
	}{
		{"earliest", Target{Earliest: true}, 0},
		{"latest", Target{Latest: true}, 10},
		{"exactly a record's time", Target{At: t0.Add(4 * time.Second)}, 4},
		{"between two records", Target{At: t0.Add(4*time.Second + 500*time.Millisecond)}, 5},
		{"before every record", Target{At: t0.Add(-time.Minute)}, 0},
		{"after every record", Target{At: t0.Add(time.Minute)}, 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Resolve(ctx, c, "ns.resolve", parts, tc.target)
			if err != nil {
				t.Fatal(err)
			}
			if got[0] != tc.want || got[1] != tc.want {
				t.Errorf("Resolve = %v, want %d for each partition", got, tc.want)
			}
		})
	}
	if _, err := Resolve(ctx, c, "ns.absent", parts, Target{Earliest: true}); err == nil {
		t.Error("Resolve of a missing topic succeeded")
	}
}

// TestCommitOnlyToAnEmptyGroup: the simple commit lands while the group is empty and is refused
// while a member is in it, so a reset can never be overwritten by a member's own position.
func TestCommitOnlyToAnEmptyGroup(t *testing.T) {
	k := kafkatest.Start(t)
	c := topicWithRecords(t, k, "ns.commit", time.Now().Add(-time.Minute))
	ctx := context.Background()
	const group = "kafka.ns.commit.uid"
	// Apache Kafka answers NOT_COORDINATOR until it has loaded the group's offsets partition.
	poll.Eventually(t, 30*time.Second, "a group nobody joined reported empty", func() error { return CheckGroupEmpty(ctx, c, group) })
	if err := Commit(ctx, c, group, "ns.commit", Offsets{0: 3, 1: 7}); err != nil {
		t.Fatalf("commit to an empty group: %v", err)
	}
	got, err := Committed(ctx, c, group, "ns.commit", []int{0, 1})
	if err != nil || got[0] != 3 || got[1] != 7 {
		t.Fatalf("committed %v %v, want 0:3 1:7", got, err)
	}

	r := kafka.NewReader(kafka.ReaderConfig{Brokers: k.Brokers, GroupID: group, Topic: "ns.commit",
		SessionTimeout: 6 * time.Second, HeartbeatInterval: 300 * time.Millisecond, MaxWait: 200 * time.Millisecond})
	defer r.Close()
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := r.FetchMessage(fctx); err != nil {
		t.Fatalf("joining the group: %v", err)
	}
	if err := CheckGroupEmpty(ctx, c, group); !errors.Is(err, ErrGroupActive) {
		t.Fatalf("CheckGroupEmpty with a member = %v, want ErrGroupActive", err)
	}
	if err := Commit(ctx, c, group, "ns.commit", Offsets{0: 0, 1: 0}); err == nil {
		t.Fatal("a simple commit was accepted while the group has a member")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 30*time.Second, "group empty after the member left", func() error { return CheckGroupEmpty(ctx, c, group) })
}

// deleteRecordsBefore moves each partition's log start to the given offset, as retention does
// when it deletes the head of a log (DeleteRecords, which kafka-go has no call for).
func deleteRecordsBefore(t *testing.T, k *kafkatest.Kafka, topic string, before Offsets) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrDeleteRecordsRequest()
	req.TimeoutMillis = 10_000
	rt := kmsg.NewDeleteRecordsRequestTopic()
	rt.Topic = topic
	for _, p := range before.Partitions() {
		rp := kmsg.NewDeleteRecordsRequestTopicPartition()
		rp.Partition, rp.Offset = int32(p), before[p]
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("deleting records: %v", err)
	}
	for _, tp := range res.Topics {
		for _, p := range tp.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil || p.LowWatermark != before[int(p.Partition)] {
				t.Fatalf("deleting records of %s/%d: %v, log start %d", topic, p.Partition, err, p.LowWatermark)
			}
		}
	}
}

// TestResolveAfterTheHeadIsDeleted: once retention (here DeleteRecords) has deleted the head of
// a log, "earliest" is where the log now starts, not 0. kafka-go files the broker's answer to an
// earliest query under LastOffset, because the broker answers it with timestamp -1.
func TestResolveAfterTheHeadIsDeleted(t *testing.T) {
	k := kafkatest.Start(t)
	topic := "ns.head-deleted-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	c := topicWithRecords(t, k, topic, t0)
	deleteRecordsBefore(t, k, topic, Offsets{0: 4, 1: 7})
	ctx := context.Background()
	cases := []struct {
		name   string
		target Target
		want   Offsets
	}{
		{"earliest", Target{Earliest: true}, Offsets{0: 4, 1: 7}},
		{"before every record", Target{At: t0.Add(-time.Minute)}, Offsets{0: 4, 1: 7}},
		{"a deleted record's time", Target{At: t0.Add(2 * time.Second)}, Offsets{0: 4, 1: 7}},
		{"a kept record's time", Target{At: t0.Add(8 * time.Second)}, Offsets{0: 8, 1: 8}},
		{"latest", Target{Latest: true}, Offsets{0: 10, 1: 10}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Resolve(ctx, c, topic, []int{0, 1}, tc.target)
			if err != nil {
				t.Fatal(err)
			}
			if got[0] != tc.want[0] || got[1] != tc.want[1] {
				t.Errorf("Resolve = %v, want %v", got, tc.want)
			}
		})
	}
	t.Run("List with FirstOffsetOf", func(t *testing.T) {
		got, err := List(ctx, c, topic, []int{0, 1}, kafka.FirstOffsetOf)
		if err != nil {
			t.Fatal(err)
		}
		if got[0].FirstOffset != 4 || got[1].FirstOffset != 7 {
			t.Errorf("FirstOffset = %d, %d; want 4, 7", got[0].FirstOffset, got[1].FirstOffset)
		}
	})
}

// TestPartitionsSeesAnIncreaseAtOnce: a client whose Transport cached the topic's metadata
// before partitions were added must still be told about them: a subscription that starts from
// a stale partition list starts the missing partitions at their beginning, delivering events
// from before it existed.
func TestPartitionsSeesAnIncreaseAtOnce(t *testing.T) {
	k := kafkatest.Start(t)
	topic := "ns.grown-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	topicWithRecords(t, k, topic, time.Now())
	// The cache never refreshes by itself during the test.
	c := &kafka.Client{Addr: kafka.TCP(k.Brokers...), Timeout: 10 * time.Second,
		Transport: &kafka.Transport{MetadataTTL: time.Hour, MetadataTopics: []string{topic}}}
	ctx := context.Background()
	if parts, err := Partitions(ctx, c, topic); err != nil || len(parts) != 2 {
		t.Fatalf("partitions before = %v %v", parts, err)
	}
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil || len(md.Topics) != 1 || len(md.Topics[0].Partitions) != 2 {
		t.Fatalf("warming the Transport's cache: %v %+v", err, md)
	}
	res, err := c.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{Topics: []kafka.TopicPartitionsConfig{{Name: topic, Count: 4}}})
	if err != nil || res.Errors[topic] != nil {
		t.Fatalf("adding partitions: %v %v", err, res)
	}
	// A real cluster's brokers learn of the change a moment after the controller confirms it.
	poll.Eventually(t, 10*time.Second, "the new partitions listed", func() error {
		parts, err := Partitions(ctx, c, topic)
		if err != nil {
			return err
		}
		if len(parts) != 4 {
			return fmt.Errorf("partitions %v, want 4 of them", parts)
		}
		return nil
	})
}
