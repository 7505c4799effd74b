package dispatcher

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/environments/poll"
)

// A binary-mode 1.0 record that misses a required attribute takes the pass-through path's
// check, and is dead-lettered as undecodable with the reason, never sent to the subscriber;
// a valid one behind it is delivered with its attributes, extensions and data intact.
func TestBinaryRecordMissingAnAttributeIsDeadLetteredWithTheReason(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 1)
	s, dls := newSink(t, nil), newSink(t, nil)
	rd := e.start(nil)
	sp := sub("uid", 1, s.URL)
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sp}, DeadLetterSinkURI: dls.URL})
	rd.waitReady(t, sp)
	bad := kafka.Message{Key: []byte("0"), Value: []byte(`{"a":1}`), Headers: []kafka.Header{
		{Key: "ce_specversion", Value: []byte("1.0")}, {Key: "ce_id", Value: []byte("no-type")},
		{Key: "ce_source", Value: []byte("/test")}, {Key: "content-type", Value: []byte("application/json")},
	}}
	if err := e.writer.WriteMessages(context.Background(), bad); err != nil {
		t.Fatal(err)
	}
	ids := e.produce(0, 1)
	s.waitIDs(t, ids, 10*time.Second)
	poll.Eventually(t, 10*time.Second, "the bad record dead-lettered", func() error {
		if n := len(dls.received()); n != 1 {
			return fmt.Errorf("dead-letter sink has %d events", n)
		}
		return nil
	})
	dead := dls.received()[0]
	data, _ := dead.Extensions()[ExtErrorData].(string)
	reason, _ := base64.StdEncoding.DecodeString(data)
	if dead.Type() != UndecodableEventType || string(dead.Data()) != `{"a":1}` || !strings.Contains(string(reason), "type") {
		t.Fatalf("dead letter %s, reason %q: want the record as it is and the missing attribute named", dead, reason)
	}
	if got := s.received(); len(got) != 1 || got[0].ID() != ids[0] || got[0].Extensions()["seq"] == nil || !strings.Contains(string(got[0].Data()), `"seq"`) {
		t.Errorf("subscriber got %v, want only the valid event, intact", got)
	}
	if v, _ := metricValue(t, rd, MetricDiscarded, map[string]string{"reason": "not_cloudevent"}); v != 1 {
		t.Errorf("discarded metric = %v", v)
	}
}
