package dispatcher

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/environments/poll"
)

// A reply larger than the dispatcher reads is never forwarded cut short (binary mode) nor
// dropped as "no reply" (structured mode): the attempt failed, it is retried, then the original
// goes to the dead-letter sink with knativeerrordata saying why, and the attempts are counted.
func TestOversizedReplyIsAFailedAttemptNotForwardedAltered(t *testing.T) {
	k := kafkatest.Start(t)
	for _, structured := range []bool{false, true} {
		name := "binary"
		if structured {
			name = "structured"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, k, 1)
			big := strings.Repeat("x", maxResponseBody+1)
			subscriber := newSink(t, func(ev *event.Event, w http.ResponseWriter) bool {
				reply := event.New()
				reply.SetID("reply-" + ev.ID())
				reply.SetSource("/subscriber")
				reply.SetType("test.reply")
				_ = reply.SetData("text/plain", []byte(big))
				ctx := binding.WithForceBinary(context.Background())
				if structured {
					ctx = binding.WithForceStructured(context.Background())
				}
				req, _ := http.NewRequest(http.MethodPost, "http://reply", nil)
				if err := cehttp.WriteRequest(ctx, binding.ToMessage(&reply), req); err != nil {
					t.Error(err)
				}
				for k, v := range req.Header {
					w.Header()[k] = v
				}
				w.WriteHeader(http.StatusOK)
				buf := make([]byte, 1<<20)
				for {
					n, err := req.Body.Read(buf)
					_, _ = w.Write(buf[:n])
					if err != nil {
						break
					}
				}
				return true
			})
			replies, dls := newSink(t, nil), newSink(t, nil)
			rd := e.start(nil)
			sp := sub("uid", 1, subscriber.URL)
			sp.ReplyURI = &replies.URL
			sp.Delivery = &v1beta1.DeliverySpec{Retry: ptr(int32(1)), BackoffDelay: ptr("PT0.01S"),
				DeadLetterSink: &v1beta1.Destination{URI: &dls.URL}}
			rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sp}})
			rd.waitReady(t, sp)
			ids := e.produce(0, 1)
			poll.Eventually(t, 60*time.Second, "the event dead-lettered", func() error {
				if n := len(dls.received()); n != 1 {
					return fmt.Errorf("dead-letter sink got %d events", n)
				}
				return nil
			})
			if n := len(replies.received()); n != 0 {
				t.Errorf("the reply sink got %d events, want none", n)
			}
			if n := subscriber.attemptCount(); n != 2 {
				t.Errorf("subscriber attempts = %d, want 2 (one retry)", n)
			}
			d := dls.received()[0]
			if d.ID() != ids[0] {
				t.Errorf("dead-lettered %s, want the original %s", d.ID(), ids[0])
			}
			data, err := base64.StdEncoding.DecodeString(fmt.Sprint(d.Extensions()[ExtErrorData]))
			if err != nil || !strings.Contains(string(data), "reply") || !strings.Contains(string(data), "limit") {
				t.Errorf("knativeerrordata = %q (%v), want it to say the reply is over the limit", data, err)
			}
			group := rd.groupID("uid")
			if v, _ := metricValue(t, rd, MetricDeliveries, map[string]string{"consumer": group, "destination": destSubscriber, "code_class": codeClassReplyTooLarge}); v != 2 {
				t.Errorf("%s{code_class=%s} = %v, want 2", MetricDeliveries, codeClassReplyTooLarge, v)
			}
		})
	}
}
