package dispatcher

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/internal/kafkabinding"
)

// The trace context a record carries (traceparent header) continues in the delivery to the
// subscriber.
func TestTraceContextFromRecordToSubscriber(t *testing.T) {
	prev := otel.GetTextMapPropagator()
	otel.SetTextMapPropagator(propagation.TraceContext{})
	t.Cleanup(func() { otel.SetTextMapPropagator(prev) })

	k := kafkatest.Start(t)
	e := newEnv(t, k, 1)
	var mu sync.Mutex
	var got string
	s := &sink{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.Header.Get("traceparent")
		mu.Unlock()
		s.serve(w, r)
	}))
	t.Cleanup(s.Close)
	rd := e.start(nil)
	sp := sub("uid", 1, s.URL)
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sp}})
	rd.waitReady(t, sp)

	traceID, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	spanID, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled})
	m, err := kafkabinding.ToMessage(testEvent("traced", 1))
	if err != nil {
		t.Fatal(err)
	}
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(trace.ContextWithRemoteSpanContext(context.Background(), sc), carrier)
	for k, v := range carrier {
		m.Headers = append(m.Headers, kafka.Header{Key: k, Value: []byte(v)})
	}
	m.Key = []byte(strconv.Itoa(0))
	if err := e.writer.WriteMessages(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	s.waitIDs(t, []string{"traced"}, 10*time.Second)
	mu.Lock()
	defer mu.Unlock()
	out := propagation.TraceContext{}.Extract(context.Background(), propagation.HeaderCarrier{"Traceparent": []string{got}})
	if trace.SpanContextFromContext(out).TraceID() != traceID {
		t.Fatalf("delivery carried traceparent %q, want trace %s", got, traceID)
	}
}
