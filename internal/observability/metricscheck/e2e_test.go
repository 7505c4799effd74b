package metricscheck

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/dispatcher"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/internal/naming"
	"github.com/kafkachannel/kafkachannel/internal/observability"
	"github.com/kafkachannel/kafkachannel/receiver"
)

// seedName is the one metric that keeps eventing-kafka's name, without the _total suffix
// promlint asks counters to have (docs/observability.md says why).
// operationName names otelhttp's server spans by their operation.
func operationName(operation string, _ *http.Request) string { return operation }

const seedName = "eventing_kafka_consumed_msg_count"

// The real receiver and dispatcher, wired the way their mains are (observability.Start, its
// registry and admin server): one event sent with a traceparent crosses receiver -> Kafka ->
// dispatcher -> subscriber in one trace with each span the child of the one before, and both
// components' scrapes parse and lint clean.
func TestEventTraceAndScrapesThroughRealComponents(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a consumer group against Kafka")
	}
	const ns, name = "default", "orders"
	topic := naming.Topic(ns, name)
	k := kafkatest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := &kafka.Client{Addr: kafka.TCP(k.Brokers...), Timeout: 10 * time.Second}
	res, err := admin.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: 1, ReplicationFactor: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Errors[topic]; err != nil {
		t.Fatal(err)
	}

	exp := tracetest.NewInMemoryExporter()
	dir := t.TempDir()
	obs, err := observability.Start(ctx, observability.Options{Component: observability.ComponentDispatcher, ConfigDir: dir,
		MetricsAddr: "127.0.0.1:0", ProfilingAddr: "127.0.0.1:0", SpanExporter: exp, PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Shutdown(context.Background())
	if err := obs.Apply(observability.ConfigTracing, map[string]string{"backend": "otlp", "otlp-endpoint": "http://127.0.0.1:1/v1/traces", "sample-rate": "1"}); err != nil {
		t.Fatal(err)
	}
	// The receiver gets its own registry and admin server, as in its own pod.
	rreg := observability.NewRegistry()
	radmin := &observability.AdminServer{Addr: "127.0.0.1:0", Registry: rreg, Log: obs.Log}
	if err := radmin.Start(); err != nil {
		t.Fatal(err)
	}
	defer radmin.Shutdown(context.Background())

	gotTrace := make(chan trace.SpanContext, 1)
	subscriber := httptest.NewServer(otelhttp.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case gotTrace <- trace.SpanContextFromContext(r.Context()):
		default:
		}
		w.WriteHeader(http.StatusAccepted)
	}), "subscriber", otelhttp.WithSpanNameFormatter(operationName)))
	defer subscriber.Close()

	d, err := dispatcher.New(dispatcher.Config{Brokers: k.Brokers, ChannelNamespace: ns, ChannelName: name, Registry: obs.Registry, Log: obs.Log,
		CommitInterval: 50 * time.Millisecond, MaxWait: 200 * time.Millisecond, SessionTimeout: 3 * time.Second,
		HeartbeatInterval: 300 * time.Millisecond, RebalanceTimeout: 3 * time.Second, JoinGroupBackoff: 200 * time.Millisecond, DrainTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	uri := subscriber.URL
	sub := v1beta1.SubscriberSpec{UID: "3f1e0c7a-uid", Generation: 1, SubscriberURI: &uri}
	d.Update(dispatcher.Channel{Subscribers: []v1beta1.SubscriberSpec{sub}})
	dctx, dcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(dctx) }()
	defer func() { dcancel(); <-done }()
	waitFor(t, 30*time.Second, "the subscriber ready", func() bool {
		st, ok := d.State(sub.UID)
		return ok && st.Ready == dispatcher.ReadyTrue
	})

	writer := &kafka.Writer{Addr: kafka.TCP(k.Brokers...), RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	idx := receiver.NewIndex()
	idx.SetChannel(receiver.Channel{Namespace: ns, Name: name, Topic: topic, Ready: true})
	rcv, err := receiver.New(receiver.Config{Channels: idx, Writer: writer, Registry: rreg, Log: obs.Log})
	if err != nil {
		t.Fatal(err)
	}
	ingress := httptest.NewServer(rcv)
	defer ingress.Close()

	const sender, senderSpan = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ingress.URL, strings.NewReader(`{"order":1}`))
	req.Host = strings.TrimPrefix(naming.ChannelURL(ns, name), "http://")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Ce-Specversion", "1.0")
	req.Header.Set("Ce-Id", "order-1")
	req.Header.Set("Ce-Source", "/test")
	req.Header.Set("Ce-Type", "order.created")
	req.Header.Set("traceparent", "00-"+sender+"-"+senderSpan+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("receiver answered %d: %s", resp.StatusCode, body)
	}
	select {
	case sc := <-gotTrace:
		if sc.TraceID().String() != sender {
			t.Errorf("subscriber got trace %s, want the sender's %s", sc.TraceID(), sender)
		}
	case <-ctx.Done():
		t.Fatal("the event never reached the subscriber")
	}

	// Every span is in the sender's trace, and the path of parents from the subscriber's span
	// goes back through the dispatcher and the receiver to the sender's span. Spans end in
	// their own time (the consumer's after its commit), so wait for the whole path.
	var spans tracetest.SpanStubs
	var kinds []string
	var top tracetest.SpanStub
	waitFor(t, 15*time.Second, "the path of spans back to the sender", func() bool {
		_ = obs.ForceFlush(ctx)
		spans = exp.GetSpans()
		byID := map[trace.SpanID]tracetest.SpanStub{}
		var leaf tracetest.SpanStub
		for _, s := range spans {
			byID[s.SpanContext.SpanID()] = s
			if s.Name == "subscriber" {
				leaf = s
			}
		}
		kinds = nil
		for s, ok := leaf, leaf.Name != ""; ok; s, ok = byID[s.Parent.SpanID()] {
			kinds = append(kinds, strings.ToLower(s.SpanKind.String())+":"+s.Name)
			top = s
		}
		return top.Parent.SpanID().String() == senderSpan
	})
	t.Logf("subscriber's span back to the sender: %v", kinds)
	for _, s := range spans {
		if s.SpanContext.TraceID().String() != sender {
			t.Errorf("span %q in trace %s, want %s", s.Name, s.SpanContext.TraceID(), sender)
		}
	}
	want := []string{"server", "client", "consumer", "producer", "server"}
	var got []string
	for _, k := range kinds {
		got = append(got, strings.SplitN(k, ":", 2)[0])
	}
	if !containsInOrder(got, want) {
		t.Errorf("span kinds from the subscriber back: %v, want %v in that order", kinds, want)
	}

	lint(t, "dispatcher", "http://"+obs.Admin.Addr+"/metrics", seedName, "kafkachannel_dispatcher_deliveries_total")
	lint(t, "receiver", "http://"+radmin.Addr+"/metrics", "kafkachannel_receiver_events_total")
}

// containsInOrder reports whether want appears in got as a subsequence.
func containsInOrder(got, want []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

func lint(t *testing.T, component, url string, mustHave ...string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("%s scrape does not parse: %v", component, err)
	}
	for _, m := range mustHave {
		if families[m] == nil {
			t.Errorf("%s scrape lacks %s", component, m)
		}
	}
	problems, err := promlint.New(strings.NewReader(string(body))).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if p.Metric == seedName && (strings.Contains(p.Text, "_total") || strings.Contains(p.Text, "_count")) {
			continue // kept for compatibility, documented
		}
		t.Errorf("%s: promlint: %s: %s", component, p.Metric, p.Text)
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
