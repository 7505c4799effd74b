package receiver

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/environments/testlog"
	"github.com/kafkachannel/kafkachannel/internal/kafkabinding"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

func newEvent(version, id string) event.Event {
	e := event.New(version)
	e.SetID(id)
	e.SetSource("/test/source")
	e.SetType("dev.kafkachannel.test")
	_ = e.SetData(event.TextPlain, "hello")
	return e
}

// request encodes e in binary or structured mode as sdk-go's HTTP client would send it.
func request(t *testing.T, url string, e event.Event, structured bool) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := binding.WithForceBinary(context.Background())
	if structured {
		ctx = binding.WithForceStructured(context.Background())
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(&e), req); err != nil {
		t.Fatal(err)
	}
	return req
}

func rawRequest(t *testing.T, method, url string, headers map[string]string, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	return req
}

var binaryHeaders = map[string]string{
	"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t", "Content-Type": "text/plain",
}

func with(h map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range h {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(out, kv[i])
			continue
		}
		out[kv[i]] = kv[i+1]
	}
	return out
}

func TestResponseCodes(t *testing.T) {
	k := kafkatest.Start(t)
	ready := createChannel(t, k, "codes", "ready", 1, true)
	createChannel(t, k, "codes", "pending", 1, false)
	r := startReceiver(t, k, func(c *Config) { c.MaxBodyBytes = 4096 })

	_, port, _ := net.SplitHostPort(r.Addr().String())
	host := naming.ChannelHost("codes", "ready")
	svc := naming.ChannelServiceName("ready")
	path := r.url + "/codes/ready"
	big := strings.Repeat("x", 4097)

	tests := []struct {
		name    string
		req     *http.Request
		code    int
		inBody  string
		chunked bool
	}{
		{name: "binary, path form", req: rawRequest(t, "POST", path, binaryHeaders, "hi"), code: 202},
		{name: "path form with a trailing slash", req: rawRequest(t, "POST", path+"/", binaryHeaders, "hi"), code: 202},
		{name: "host: status.address.url", req: rawRequest(t, "POST", r.url+"/", with(binaryHeaders, "Host", host), "hi"), code: 202},
		{name: "host with port", req: rawRequest(t, "POST", r.url+"/", with(binaryHeaders, "Host", host+":"+port), "hi"), code: 202},
		{name: "host <svc>.<ns>.svc", req: rawRequest(t, "POST", r.url, with(binaryHeaders, "Host", svc+".codes.svc"), "hi"), code: 202},
		{name: "host <svc>.<ns>:80", req: rawRequest(t, "POST", r.url, with(binaryHeaders, "Host", svc+".codes:80"), "hi"), code: 202},
		{name: "host in upper case", req: rawRequest(t, "POST", r.url, with(binaryHeaders, "Host", strings.ToUpper(host)), "hi"), code: 202},
		{name: "structured", req: rawRequest(t, "POST", path, map[string]string{"Content-Type": "application/cloudevents+json; charset=utf-8"},
			`{"specversion":"1.0","id":"2","source":"/s","type":"t","data":{"a":1}}`), code: 202},
		{name: "v0.3 binary", req: rawRequest(t, "POST", path, with(binaryHeaders, "ce-specversion", "0.3"), "hi"), code: 202},
		{name: "empty body is a valid event", req: rawRequest(t, "POST", path, with(binaryHeaders, "Content-Type", ""), ""), code: 202},

		{name: "GET", req: rawRequest(t, "GET", path, nil, ""), code: 405, inBody: "POST"},
		{name: "PUT", req: rawRequest(t, "PUT", path, binaryHeaders, "hi"), code: 405, inBody: "PUT is not allowed"},
		{name: "health path on the event port", req: rawRequest(t, "GET", r.url+"/healthz", nil, ""), code: 405, inBody: "POST"},

		{name: "unknown channel, path form", req: rawRequest(t, "POST", r.url+"/codes/nope", binaryHeaders, "hi"), code: 404, inBody: "no KafkaChannel codes/nope"},
		{name: "unknown namespace, path form", req: rawRequest(t, "POST", r.url+"/other/ready", binaryHeaders, "hi"), code: 404, inBody: "no KafkaChannel other/ready"},
		{name: "unknown host", req: rawRequest(t, "POST", r.url+"/", with(binaryHeaders, "Host", "nope-kn-channel.codes.svc.cluster.local"), "hi"), code: 404, inBody: "no KafkaChannel at host"},
		{name: "IP host, no path", req: rawRequest(t, "POST", r.url+"/", binaryHeaders, "hi"), code: 404, inBody: "no KafkaChannel"},

		{name: "topic not ready", req: rawRequest(t, "POST", r.url+"/codes/pending", binaryHeaders, "hi"), code: 503, inBody: "TopicReady=False"},
		{name: "topic not ready, by host", req: rawRequest(t, "POST", r.url, with(binaryHeaders, "Host", naming.ChannelHost("codes", "pending")), "hi"), code: 503, inBody: "not ready"},

		{name: "no CloudEvent at all", req: rawRequest(t, "POST", path, map[string]string{"Content-Type": "text/plain"}, "hi"), code: 400, inBody: "not a CloudEvent"},
		{name: "binary without id", req: rawRequest(t, "POST", path, with(binaryHeaders, "ce-id", ""), "hi"), code: 400, inBody: "id"},
		{name: "binary without source", req: rawRequest(t, "POST", path, with(binaryHeaders, "ce-source", ""), "hi"), code: 400, inBody: "source"},
		{name: "unknown specversion", req: rawRequest(t, "POST", path, with(binaryHeaders, "ce-specversion", "2.0"), "hi"), code: 400, inBody: "not"},
		{name: "bad time", req: rawRequest(t, "POST", path, with(binaryHeaders, "ce-time", "yesterday"), "hi"), code: 400, inBody: "time"},
		{name: "structured, broken JSON", req: rawRequest(t, "POST", path, map[string]string{"Content-Type": "application/cloudevents+json"}, `{"specversion":`), code: 400, inBody: "not a valid CloudEvent"},
		{name: "structured without type", req: rawRequest(t, "POST", path, map[string]string{"Content-Type": "application/cloudevents+json"},
			`{"specversion":"1.0","id":"2","source":"/s"}`), code: 400, inBody: "type"},
		{name: "upper-case extension name", req: rawRequest(t, "POST", path, map[string]string{"Content-Type": "application/cloudevents+json"},
			`{"specversion":"0.3","id":"2","source":"/s","type":"t","MyExt":"v"}`), code: 400, inBody: `"MyExt"`},

		{name: "batched mode", req: rawRequest(t, "POST", path, map[string]string{"Content-Type": "application/cloudevents-batch+json"},
			`[{"specversion":"1.0","id":"2","source":"/s","type":"t"}]`), code: 415, inBody: "batched mode"},

		{name: "too large, Content-Length", req: rawRequest(t, "POST", path, binaryHeaders, big), code: 413, inBody: "limit of 4096 bytes"},
		{name: "too large, chunked", req: rawRequest(t, "POST", path, binaryHeaders, big), code: 413, inBody: "limit of 4096 bytes", chunked: true},
		{name: "just at the limit", req: rawRequest(t, "POST", path, binaryHeaders, big[:4096]), code: 202},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.chunked {
				// Hide the length so only the reader's limit can catch it.
				tc.req.Body = io.NopCloser(io.MultiReader(tc.req.Body))
				tc.req.ContentLength = -1
			}
			code, body := post(t, tc.req)
			if code != tc.code {
				t.Fatalf("got %d %q, want %d", code, body, tc.code)
			}
			if tc.code != 202 && body == "" {
				t.Errorf("a %d needs a reason in its body", code)
			}
			if !strings.Contains(body, tc.inBody) {
				t.Errorf("body %q does not say %q", body, tc.inBody)
			}
		})
	}

	// A 405 names the allowed method.
	resp, err := http.Get(path)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if got := resp.Header.Get("Allow"); got != "POST" {
		t.Errorf("Allow: %q, want POST", got)
	}

	// Everything accepted is in the topic, nothing else.
	accepted := 0
	for _, tc := range tests {
		if tc.code == 202 {
			accepted++
		}
	}
	if got := len(readTopic(t, k, ready.Topic, 1)); got != accepted {
		t.Errorf("%d records in the topic, want %d (one per 202)", got, accepted)
	}

	checkMetrics(t, r, map[string]float64{
		`kafkachannel_receiver_events_total{channel="codes/ready",code="202"}`:   float64(accepted),
		`kafkachannel_receiver_events_total{channel="codes/ready",code="400"}`:   8,
		`kafkachannel_receiver_events_total{channel="codes/pending",code="503"}`: 2,
		`kafkachannel_receiver_events_total{channel="unknown",code="404"}`:       4,
		`kafkachannel_receiver_events_total{channel="unknown",code="405"}`:       4,
		`kafkachannel_receiver_events_total{channel="codes/ready",code="413"}`:   2,
		`kafkachannel_receiver_events_total{channel="codes/ready",code="415"}`:   1,
	})
}

// checkMetrics compares counters and lints every metric the receiver exposes.
func checkMetrics(t *testing.T, r *testReceiver, want map[string]float64) {
	t.Helper()
	mfs, err := r.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			if m.GetCounter() != nil {
				got[fmt.Sprintf("%s{%s}", mf.GetName(), strings.Join(labels, ","))] = m.GetCounter().GetValue()
			}
		}
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	for _, n := range []string{"kafkachannel_receiver_request_duration_seconds", "kafkachannel_receiver_produce_duration_seconds"} {
		if !names[n] {
			t.Errorf("metric %s missing", n)
		}
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
}

// eventView is what must survive the trip HTTP -> Kafka -> consumer unchanged.
type eventView struct {
	SpecVersion, ID, Source, Type, Subject, DataContentType, DataSchema, Time string
	Extensions                                                                map[string]string
	Data                                                                      []byte
}

func view(e *event.Event) eventView {
	v := eventView{
		SpecVersion: e.SpecVersion(), ID: e.ID(), Source: e.Source(), Type: e.Type(), Subject: e.Subject(),
		DataContentType: e.DataContentType(), DataSchema: e.DataSchema(), Extensions: map[string]string{},
		Data: e.Data(),
	}
	if !e.Time().IsZero() {
		v.Time = e.Time().UTC().Format(time.RFC3339Nano)
	}
	for k, x := range e.Extensions() {
		s, _ := types.Format(x)
		v.Extensions[k] = s
	}
	return v
}

func TestEventsArriveIntact(t *testing.T) {
	k := kafkatest.Start(t)
	ch := createChannel(t, k, "intact", "events", 1, true)
	r := startReceiver(t, k, nil)
	url := r.url + naming.ChannelPath("intact", "events")

	binaryData := make([]byte, 256)
	for i := range binaryData {
		binaryData[i] = byte(i)
	}
	full := func(version, id string) event.Event {
		e := newEvent(version, id)
		e.SetSubject("Grüße aus Köln — 東京 🚀")
		e.SetTime(time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC))
		e.SetDataSchema("https://example.com/schema")
		e.SetExtension("myext", "wert ü 値")
		e.SetExtension("partitionkey", "order-17")
		e.SetExtension("count", "42")
		_ = e.SetData("application/json", map[string]any{"text": "naïve café ☕", "n": 1})
		return e
	}
	binaryEvent := func(version, id string) event.Event {
		e := full(version, id)
		e.SetDataContentType("application/octet-stream")
		e.DataEncoded = binaryData
		return e
	}
	cases := []struct {
		name       string
		e          event.Event
		structured bool
	}{
		{"binary mode, JSON data", full(event.CloudEventsVersionV1, "b-json"), false},
		{"structured mode, JSON data", full(event.CloudEventsVersionV1, "s-json"), true},
		{"binary mode, binary data", binaryEvent(event.CloudEventsVersionV1, "b-bin"), false},
		{"structured mode, binary data (data_base64)", binaryEvent(event.CloudEventsVersionV1, "s-bin"), true},
		{"binary mode v0.3", full(event.CloudEventsVersionV03, "b-03"), false},
		{"structured mode v0.3", full(event.CloudEventsVersionV03, "s-03"), true},
		{"binary mode v0.3, binary data", binaryEvent(event.CloudEventsVersionV03, "b-03-bin"), false},
		{"no data", func() event.Event {
			e := event.New()
			e.SetID("nodata")
			e.SetSource("urn:x")
			e.SetType("t")
			return e
		}(), false},
	}
	for _, tc := range cases {
		if code, body := post(t, request(t, url, tc.e, tc.structured)); code != http.StatusAccepted {
			t.Fatalf("%s: got %d %q, want 202", tc.name, code, body)
		}
	}
	records := readTopic(t, k, ch.Topic, 1)
	if len(records) != len(cases) {
		t.Fatalf("%d records, want %d", len(records), len(cases))
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := records[i]
			got, err := kafkabinding.ToEvent(&rec)
			if err != nil {
				t.Fatalf("decoding the record: %v", err)
			}
			if diff := cmp.Diff(view(&tc.e), view(got)); diff != "" {
				t.Errorf("event changed on the way (-sent +stored):\n%s", diff)
			}
			if pk, ok := tc.e.Extensions()["partitionkey"]; ok && string(rec.Key) != pk {
				t.Errorf("record key %q, want the partitionkey %q", rec.Key, pk)
			}
			if kafkabinding.Header(&rec, "ce_specversion") != tc.e.SpecVersion() {
				t.Errorf("ce_specversion header %q, want %q", kafkabinding.Header(&rec, "ce_specversion"), tc.e.SpecVersion())
			}
		})
	}
}

func TestTraceContextCarried(t *testing.T) {
	// The tracing setup installs the global propagator in the binaries; W3C headers then go
	// into the record too.
	prev := otel.GetTextMapPropagator()
	otel.SetTextMapPropagator(propagation.TraceContext{})
	t.Cleanup(func() { otel.SetTextMapPropagator(prev) })
	// A real SDK provider, as in the binaries: the receiver's own spans then have valid
	// contexts, and an untraced sender's event must still not gain a traceparent.
	prevTP := otel.GetTracerProvider()
	tp := sdktrace.NewTracerProvider()
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { otel.SetTracerProvider(prevTP); _ = tp.Shutdown(context.Background()) })

	k := kafkatest.Start(t)
	ch := createChannel(t, k, "trace", "events", 1, true)
	r := startReceiver(t, k, nil)
	url := r.url + naming.ChannelPath("trace", "events")

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	send := func(id string, headers map[string]string, own string) {
		e := newEvent(event.CloudEventsVersionV1, id)
		if own != "" {
			e.SetExtension("traceparent", own)
		}
		req := request(t, url, e, false)
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		if code, body := post(t, req); code != http.StatusAccepted {
			t.Fatalf("%s: got %d %q", id, code, body)
		}
	}
	const own = "00-11111111111111111111111111111111-2222222222222222-01"
	send("w3c", map[string]string{"traceparent": "00-" + traceID + "-00f067aa0ba902b7-01", "tracestate": "vendor=x"}, "")
	send("b3-single", map[string]string{"b3": traceID + "-00f067aa0ba902b7-1"}, "")
	send("b3-multi", map[string]string{"X-B3-TraceId": traceID, "X-B3-SpanId": "00f067aa0ba902b7", "X-B3-Sampled": "1"}, "")
	send("own-extension", map[string]string{"traceparent": "00-" + traceID + "-00f067aa0ba902b7-01"}, own)
	send("untraced", nil, "")

	records := readTopic(t, k, ch.Topic, 1)
	if len(records) != 5 {
		t.Fatalf("%d records, want 5", len(records))
	}
	for _, rec := range records[:3] {
		e, err := kafkabinding.ToEvent(&rec)
		if err != nil {
			t.Fatal(err)
		}
		tp, _ := e.Extensions()["traceparent"].(string)
		if !strings.HasPrefix(tp, "00-"+traceID+"-") || len(tp) != 55 {
			t.Errorf("%s: traceparent extension %q does not continue trace %s", e.ID(), tp, traceID)
		}
		if h := kafkabinding.Header(&rec, "traceparent"); !strings.Contains(h, traceID) {
			t.Errorf("%s: W3C traceparent record header %q does not continue trace %s", e.ID(), h, traceID)
		}
	}
	if ts := kafkabinding.Header(&records[0], "ce_tracestate"); ts != "vendor=x" {
		t.Errorf("tracestate extension %q, want vendor=x", ts)
	}
	if tp := kafkabinding.Header(&records[3], "ce_traceparent"); tp != own {
		t.Errorf("the event's own traceparent was replaced: %q, want %q", tp, own)
	}
	if tp := kafkabinding.Header(&records[4], "ce_traceparent"); tp != "" {
		t.Errorf("an untraced request got traceparent %q", tp)
	}
}

func TestKafkaDownIsNeverAccepted(t *testing.T) {
	if kafkatest.External() {
		t.Skip("stops the in-process Kafka")
	}
	k := kafkatest.Start(t)
	createChannel(t, k, "down", "events", 1, true)
	r := startReceiver(t, k, func(c *Config) { c.ProduceTimeout = 3 * time.Second })
	url := r.url + naming.ChannelPath("down", "events")

	if code, body := post(t, request(t, url, newEvent("1.0", "before"), false)); code != http.StatusAccepted {
		t.Fatalf("before stopping Kafka: %d %q", code, body)
	}
	k.Cluster.Close()
	for i := 0; i < 3; i++ {
		code, body := post(t, request(t, url, newEvent("1.0", fmt.Sprintf("after-%d", i)), false))
		if code != http.StatusServiceUnavailable {
			t.Fatalf("with Kafka stopped: got %d %q, want 503", code, body)
		}
		if !strings.Contains(body, "Kafka") {
			t.Errorf("reason %q does not mention Kafka", body)
		}
	}
}

func TestConcurrentSendersExactlyOnce(t *testing.T) {
	senders, perSender := 32, 50
	if testing.Short() {
		senders, perSender = 8, 20
	}
	const partitions = 3
	k := kafkatest.Start(t)
	ch := createChannel(t, k, "load", "events", partitions, true)
	r := startReceiver(t, k, nil)
	host := naming.ChannelHost("load", "events")

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: senders}}
	var wg sync.WaitGroup
	var failures atomic.Int64
	errs := make(chan string, 10)
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perSender; i++ {
				e := newEvent("1.0", fmt.Sprintf("%d-%d", s, i))
				// Even senders key their events: a key must pin a partition.
				if s%2 == 0 {
					e.SetExtension("partitionkey", fmt.Sprintf("sender-%d", s))
				}
				req := request(t, r.url+"/", e, s%3 == 0)
				req.Host = host
				resp, err := client.Do(req)
				if err != nil {
					failures.Add(1)
					select {
					case errs <- err.Error():
					default:
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					failures.Add(1)
					select {
					case errs <- resp.Status:
					default:
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if n := failures.Load(); n > 0 {
		var first []string
		for e := range errs {
			first = append(first, e)
		}
		t.Fatalf("%d of %d requests not acknowledged: %v", n, senders*perSender, first)
	}

	records := readTopic(t, k, ch.Topic, partitions)
	if len(records) != senders*perSender {
		t.Errorf("%d records, want %d", len(records), senders*perSender)
	}
	seen := map[string]int{}
	keyPartition := map[string]int{}
	keylessPartitions := map[int]bool{}
	for _, rec := range records {
		e, err := kafkabinding.ToEvent(&rec)
		if err != nil {
			t.Fatal(err)
		}
		seen[e.ID()]++
		pk, _ := e.Extensions()["partitionkey"].(string)
		if string(rec.Key) != pk {
			t.Errorf("record %s: key %q, want partitionkey %q", e.ID(), rec.Key, pk)
		}
		if pk == "" {
			keylessPartitions[rec.Partition] = true
			continue
		}
		if p, ok := keyPartition[pk]; ok && p != rec.Partition {
			t.Errorf("key %s on partitions %d and %d", pk, p, rec.Partition)
		}
		keyPartition[pk] = rec.Partition
	}
	for s := 0; s < senders; s++ {
		for i := 0; i < perSender; i++ {
			if n := seen[fmt.Sprintf("%d-%d", s, i)]; n != 1 {
				t.Errorf("event %d-%d is %d times in the topic, want once", s, i, n)
			}
		}
	}
	if len(keylessPartitions) < 2 {
		t.Errorf("records without a key all went to partitions %v: they should be spread", keylessPartitions)
	}
}

// gatedWriter holds writes until the gate opens, so a test can have a request in flight.
type gatedWriter struct {
	MessageWriter
	entered chan struct{}
	gate    chan struct{}
	closed  atomic.Bool
}

func (g *gatedWriter) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	g.entered <- struct{}{}
	<-g.gate
	return g.MessageWriter.WriteMessages(ctx, msgs...)
}

func (g *gatedWriter) Close() error {
	g.closed.Store(true)
	return g.MessageWriter.Close()
}

func TestGracefulShutdown(t *testing.T) {
	k := kafkatest.Start(t)
	ch := createChannel(t, k, "shutdown", "events", 1, true)
	var gw *gatedWriter
	r := startReceiver(t, k, func(c *Config) {
		gw = &gatedWriter{MessageWriter: c.Writer, entered: make(chan struct{}, 1), gate: make(chan struct{})}
		c.Writer = gw
	})
	url := r.url + naming.ChannelPath("shutdown", "events")

	result := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(request(t, url, newEvent("1.0", "in-flight"), false))
		if err != nil {
			result <- -1
			return
		}
		_ = resp.Body.Close()
		result <- resp.StatusCode
	}()
	<-gw.entered

	shutdownDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		shutdownDone <- r.Shutdown(ctx)
	}()
	// New connections are refused as soon as shutdown begins...
	waitFor(t, 5*time.Second, "the listener to close", func() error {
		c, dialErr := net.DialTimeout("tcp", r.Addr().String(), time.Second)
		if dialErr == nil {
			_ = c.Close()
			return fmt.Errorf("still accepting connections")
		}
		return nil // refused: what the test waits for
	})
	// ...but the writer stays open for the request in flight.
	if gw.closed.Load() {
		t.Fatal("the writer was closed with a request in flight")
	}
	close(gw.gate)
	if code := <-result; code != http.StatusAccepted {
		t.Errorf("the request in flight got %d, want 202", code)
	}
	if err := <-shutdownDone; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if !gw.closed.Load() {
		t.Error("Shutdown did not close the writer")
	}
	if got := readTopic(t, k, ch.Topic, 1); len(got) != 1 {
		t.Errorf("%d records after shutdown, want 1", len(got))
	}
}

func TestBodyReadOnce(t *testing.T) {
	// The receiver reads the body itself (to enforce the limit) and hands sdk-go a copy: the
	// data must be the bytes sent, not an empty or partial read.
	k := kafkatest.Start(t)
	ch := createChannel(t, k, "body", "events", 1, true)
	r := startReceiver(t, k, nil)
	payload := bytes.Repeat([]byte("0123456789"), 50_000) // 500 kB
	req := rawRequest(t, "POST", r.url+naming.ChannelPath("body", "events"), with(binaryHeaders, "Content-Type", "application/octet-stream"), string(payload))
	if code, body := post(t, req); code != http.StatusAccepted {
		t.Fatalf("got %d %q", code, body)
	}
	recs := readTopic(t, k, ch.Topic, 1)
	if len(recs) != 1 || !bytes.Equal(recs[0].Value, payload) {
		t.Fatalf("record value differs from the body sent")
	}
}

func TestRunStopsWithContext(t *testing.T) {
	k := kafkatest.Start(t)
	createChannel(t, k, "run", "events", 1, true)
	w := &gatedWriter{MessageWriter: NewWriter(kafkaConfig(t, k), WriterOptions{}),
		entered: make(chan struct{}, 100), gate: make(chan struct{})}
	close(w.gate)
	r, err := New(Config{Channels: channels, Writer: w, Log: testlog.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, addr, "", 10*time.Second) }()
	url := "http://" + addr + naming.ChannelPath("run", "events")
	waitFor(t, 10*time.Second, "Run to serve", func() error {
		resp, err := http.DefaultClient.Do(request(t, url, newEvent("1.0", "run"), false))
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if !w.closed.Load() {
		t.Error("Run did not close the writer")
	}
}
