package observability

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
)

// zipkinSpan is the part of a Zipkin v2 JSON span the tests look at.
type zipkinSpan struct {
	TraceID       string `json:"traceId"`
	ID            string `json:"id"`
	ParentID      string `json:"parentId"`
	Name          string `json:"name"`
	Kind          string `json:"kind"`
	LocalEndpoint struct {
		ServiceName string `json:"serviceName"`
	} `json:"localEndpoint"`
}

// zipkinCollector is a Zipkin-compatible HTTP collector: POST /api/v2/spans with a JSON array.
type zipkinCollector struct {
	*httptest.Server
	mu    sync.Mutex
	spans []zipkinSpan
	bad   []string
}

func newZipkinCollector(t *testing.T) *zipkinCollector {
	c := &zipkinCollector{}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var spans []zipkinSpan
		c.mu.Lock()
		defer c.mu.Unlock()
		if r.Method != http.MethodPost || r.URL.Path != "/api/v2/spans" || json.Unmarshal(body, &spans) != nil {
			c.bad = append(c.bad, r.Method+" "+r.URL.Path+" "+string(body))
			http.Error(w, "not Zipkin v2 JSON", http.StatusBadRequest)
			return
		}
		c.spans = append(c.spans, spans...)
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *zipkinCollector) URL() string { return c.Server.URL + "/api/v2/spans" }

func (c *zipkinCollector) get() ([]zipkinSpan, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]zipkinSpan(nil), c.spans...), append([]string(nil), c.bad...)
}

// tracedTopic is a new topic for the traced event to pass through: against a real cluster
// (KAFKA_BOOTSTRAP_SERVERS) every test and every run needs its own. Lower case: Zipkin's model
// lower-cases the span names that carry it.
func tracedTopic(t *testing.T) string {
	return strings.ToLower(fmt.Sprintf("traced-%s-%d", t.Name(), time.Now().UnixNano()))
}

// operationName names otelhttp's server spans by their operation, so the spans of the receiver
// and the subscriber in these tests can be told apart.
func operationName(operation string, _ *http.Request) string { return operation }

// hop is one span of the path, as either capture shows it.
type hop struct {
	traceID, spanID, parentID, name, kind string
}

// pipeline sends one event the way the data plane does: a client calls the receiver (HTTP
// server span), which produces it to Kafka with the trace context in the record's headers; a
// consumer reads the record, continues the trace from its headers and delivers it over HTTP to
// a subscriber (server span). It returns the trace id the client started.
func pipeline(t *testing.T, brokers []string, topic string) trace.TraceID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := &http.Client{Transport: otelhttp.NewTransport(http.DefaultTransport)}

	client2 := &kafka.Client{Addr: kafka.TCP(brokers...)}
	res, err := client2.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: 1, ReplicationFactor: 1}}})
	mustf(t, err, "creating topic")
	mustf(t, res.Errors[topic], "creating topic")

	writer := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer writer.Close()
	receiver := httptest.NewServer(otelhttp.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pctx, span := otel.Tracer("test").Start(r.Context(), "produce "+topic, trace.WithSpanKind(trace.SpanKindProducer))
		msg := kafka.Message{Value: []byte("event"), Headers: []kafka.Header{{Key: "ce_id", Value: []byte("1")}}}
		InjectKafka(pctx, &msg)
		err := writer.WriteMessages(pctx, msg)
		span.End()
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}), "receive", otelhttp.WithSpanNameFormatter(operationName)))
	defer receiver.Close()

	delivered := make(chan string, 1)
	subscriber := httptest.NewServer(otelhttp.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		delivered <- trace.SpanContextFromContext(r.Context()).TraceID().String()
		w.WriteHeader(http.StatusOK)
	}), "subscriber", otelhttp.WithSpanNameFormatter(operationName)))
	defer subscriber.Close()

	rootCtx, root := otel.Tracer("test").Start(ctx, "client")
	req, _ := http.NewRequestWithContext(rootCtx, http.MethodPost, receiver.URL, strings.NewReader("event"))
	resp, err := client.Do(req)
	mustf(t, err, "posting to the receiver")
	resp.Body.Close()
	root.End()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("receiver answered %d", resp.StatusCode)
	}

	reader := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer reader.Close()
	msg, err := reader.ReadMessage(ctx)
	mustf(t, err, "consuming the record")
	cctx, consume := otel.Tracer("test").Start(ExtractKafka(context.Background(), &msg), "consume "+topic, trace.WithSpanKind(trace.SpanKindConsumer))
	req, _ = http.NewRequestWithContext(cctx, http.MethodPost, subscriber.URL, strings.NewReader(string(msg.Value)))
	resp, err = client.Do(req)
	mustf(t, err, "delivering to the subscriber")
	resp.Body.Close()
	consume.End()

	if got, want := <-delivered, root.SpanContext().TraceID().String(); got != want {
		t.Errorf("subscriber saw trace %s, want %s", got, want)
	}
	return root.SpanContext().TraceID()
}

// checkPath asserts the spans form one trace: client -> HTTP client -> receive (server) ->
// produce -> consume -> HTTP client -> subscriber (server), each the parent of the next.
func checkPath(t *testing.T, topic string, want trace.TraceID, spans []hop) {
	t.Helper()
	byName := map[string][]hop{}
	for _, s := range spans {
		if s.traceID != want.String() {
			t.Errorf("span %q in trace %s, want %s", s.name, s.traceID, want)
		}
		// Zipkin's model lower-cases span names.
		byName[strings.ToLower(s.name)] = append(byName[strings.ToLower(s.name)], s)
	}
	one := func(name string) hop {
		if len(byName[name]) != 1 {
			t.Fatalf("want one span %q, got %d (all: %+v)", name, len(byName[name]), spans)
		}
		return byName[name][0]
	}
	var httpClients []hop
	for name, hs := range byName {
		if name == "http post" {
			httpClients = append(httpClients, hs...)
		}
	}
	if len(httpClients) != 2 {
		t.Fatalf("want two HTTP client spans, got %+v (all: %+v)", httpClients, spans)
	}
	root, receive, produce, consume, sub := one("client"), one("receive"), one("produce "+topic), one("consume "+topic), one("subscriber")
	if root.parentID != "" {
		t.Errorf("client span has parent %s, want none", root.parentID)
	}
	clientOf := func(parent hop) hop {
		for _, c := range httpClients {
			if c.parentID == parent.spanID {
				return c
			}
		}
		t.Fatalf("no HTTP client span under %q", parent.name)
		return hop{}
	}
	for _, link := range []struct{ child, parent hop }{
		{clientOf(root), root},
		{receive, clientOf(root)},
		{produce, receive},
		{consume, produce},
		{clientOf(consume), consume},
		{sub, clientOf(consume)},
	} {
		if link.child.parentID != link.parent.spanID {
			t.Errorf("span %q has parent %s, want %q (%s)", link.child.name, link.child.parentID, link.parent.name, link.parent.spanID)
		}
	}
	for name, kind := range map[string]string{"receive": "SERVER", "subscriber": "SERVER"} {
		if got := one(name).kind; got != kind {
			t.Errorf("span %q kind %s, want %s", name, got, kind)
		}
	}
}

func TestTraceCrossesHTTPKafkaHTTPZipkin(t *testing.T) {
	collector := newZipkinCollector(t)
	dir := t.TempDir()
	writeConfigMap(t, dir, ConfigTracing, map[string]string{"backend": "zipkin", "zipkin-endpoint": collector.URL(), "sample-rate": "1"})
	o := startForTest(t, Options{ConfigDir: dir})
	k := kafkatest.Start(t)

	topic := tracedTopic(t)
	tid := pipeline(t, k.Brokers, topic)
	mustf(t, o.ForceFlush(context.Background()), "flushing spans")
	var spans []zipkinSpan
	eventually(t, 10*time.Second, "seven spans at the collector", func() bool {
		spans, _ = collector.get()
		return len(spans) >= 7
	})
	if _, bad := collector.get(); len(bad) > 0 {
		t.Errorf("collector got requests it could not decode: %q", bad)
	}
	var hops []hop
	for _, s := range spans {
		if s.LocalEndpoint.ServiceName != "kafkachannel-receiver" {
			t.Errorf("span %q from service %q, want kafkachannel-receiver", s.Name, s.LocalEndpoint.ServiceName)
		}
		hops = append(hops, hop{traceID: s.TraceID, spanID: s.ID, parentID: s.ParentID, name: s.Name, kind: s.Kind})
	}
	checkPath(t, topic, tid, hops)
}

func TestTraceCrossesHTTPKafkaHTTPInMemory(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	dir := t.TempDir()
	// With an exporter given, any backend other than none sends to it.
	writeConfigMap(t, dir, ConfigTracing, map[string]string{"backend": "otlp", "otlp-endpoint": "http://127.0.0.1:1/v1/traces", "debug": "true"})
	o := startForTest(t, Options{ConfigDir: dir, SpanExporter: exp})
	k := kafkatest.Start(t)

	topic := tracedTopic(t)
	tid := pipeline(t, k.Brokers, topic)
	mustf(t, o.ForceFlush(context.Background()), "flushing spans")
	var hops []hop
	for _, s := range exp.GetSpans() {
		h := hop{traceID: s.SpanContext.TraceID().String(), spanID: s.SpanContext.SpanID().String(), name: s.Name,
			kind: strings.ToUpper(s.SpanKind.String())}
		if s.Parent.IsValid() {
			h.parentID = s.Parent.SpanID().String()
		}
		hops = append(hops, h)
	}
	checkPath(t, topic, tid, hops)
}

// Spans still in the batch when a pod stops are sent by Shutdown.
func TestShutdownFlushesSpans(t *testing.T) {
	collector := newZipkinCollector(t)
	dir := t.TempDir()
	writeConfigMap(t, dir, ConfigTracing, map[string]string{"backend": "zipkin", "zipkin-endpoint": collector.URL(), "debug": "true"})
	o := startForTest(t, Options{ConfigDir: dir})
	_, span := otel.Tracer("test").Start(context.Background(), "last words")
	span.End()
	// The batch processor would wait 5 s; Shutdown must not.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mustf(t, o.Shutdown(ctx), "Shutdown")
	spans, _ := collector.get()
	if len(spans) != 1 || spans[0].Name != "last words" {
		t.Errorf("collector has %+v, want the one span", spans)
	}
}
