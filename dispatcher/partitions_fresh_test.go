package dispatcher

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
)

// TestSubscriptionAddedRightAfterPartitionsGrowStartsAtTheEnd: a subscriber added just after
// the topic gained a partition starts at the end of every partition, the new one included,
// although the dispatcher's Transport cached the topic's metadata before the change. Taking the
// new partition for newer than the subscription would deliver the events it already held.
func TestSubscriptionAddedRightAfterPartitionsGrowStartsAtTheEnd(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 1)
	rd := e.start(func(c *Config) {
		// The cache never refreshes by itself during the test.
		c.Transport = &kafka.Transport{MetadataTTL: time.Hour, MetadataTopics: []string{e.topic}}
	})
	first, late := newSink(t, nil), newSink(t, nil)
	a := sub("uid-a", 1, first.URL)
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{a}})
	rd.waitReady(t, a)

	res, err := e.client.CreatePartitions(context.Background(), &kafka.CreatePartitionsRequest{
		Topics: []kafka.TopicPartitionsConfig{{Name: e.topic, Count: 2}}})
	if err != nil || res.Errors[e.topic] != nil {
		t.Fatalf("adding a partition: %v %v", err, res)
	}
	e.parts = 2
	w := &kafka.Writer{Addr: kafka.TCP(k.Brokers...), Topic: e.topic, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll,
		Transport: &kafka.Transport{}, Balancer: e.writer.Balancer}
	defer w.Close()
	e.writer = w
	before := append(e.produce(0, 3), e.produce(1, 3)...)
	first.waitIDs(t, before, 30*time.Second)

	b := sub("uid-b", 1, late.URL)
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{a, b}})
	rd.waitReady(t, a, b)
	after := append(e.produce(0, 2), e.produce(1, 2)...)
	late.waitIDs(t, after, 30*time.Second)
	var old []string
	for id := range late.ids() {
		for _, o := range before {
			if id == o {
				old = append(old, id)
			}
		}
	}
	if len(old) > 0 {
		t.Errorf("the subscriber added after the partition got events from before it existed: %s", strings.Join(old, " "))
	}
}
