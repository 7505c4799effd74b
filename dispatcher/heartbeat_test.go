package dispatcher

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
)

// The dispatcher's own heartbeat must read the coordinator's answer: kafka-go's
// Client.Heartbeat decodes versions 1-4 of the response in the wrong field order and reads
// every error as success (heartbeat.go), which would make a fenced member look alive.
func TestOwnHeartbeatReadsTheCoordinatorsAnswer(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 1)
	group := "hb-" + e.name
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID: group, Brokers: k.Brokers, Topics: []string{e.topic},
		SessionTimeout: 6 * time.Second, RebalanceTimeout: 6 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cg.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	gen, err := cg.Next(ctx)
	if err != nil {
		t.Fatalf("joining: %v", err)
	}
	newClient := func() *kafka.Client { return &kafka.Client{Addr: kafka.TCP(k.Brokers...)} }
	h := newOwnHeartbeat(group, kafka.DefaultDialer, newClient)
	t.Cleanup(h.stop)

	for _, tc := range []struct {
		name       string
		generation int32
		member     string
		want       error
	}{
		{"the member of the current generation", gen.ID, gen.MemberID, nil},
		{"a generation that ended", gen.ID - 1, gen.MemberID, kafka.IllegalGeneration},
		{"a later generation", gen.ID + 1, gen.MemberID, kafka.IllegalGeneration},
		{"a member the group does not have", gen.ID, "nobody", kafka.UnknownMemberId},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := h.beat(ctx, tc.generation, tc.member)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("beat(%d, %q) = %v, want %v", tc.generation, tc.member, err, tc.want)
			}
			if errors.Is(err, errNoCoordinator) {
				t.Fatalf("beat(%d, %q) = %v: the coordinator answered", tc.generation, tc.member, err)
			}
		})
	}

	// No coordinator: a broker that is gone is no answer.
	gone := newOwnHeartbeat(group, kafka.DefaultDialer, func() *kafka.Client {
		return &kafka.Client{Addr: kafka.TCP("127.0.0.1:1")}
	})
	t.Cleanup(gone.stop)
	if err := gone.beat(ctx, gen.ID, gen.MemberID); !errors.Is(err, errNoCoordinator) {
		t.Fatalf("beat without a reachable broker = %v, want %v", err, errNoCoordinator)
	}
}
