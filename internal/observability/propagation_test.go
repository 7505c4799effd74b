package observability

import (
	"context"
	"net/http"
	"testing"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// A sender instrumented with Zipkin's B3 headers continues its trace; what goes on is W3C only,
// and W3C wins when a request carries both.
func TestPropagatorReadsB3WritesW3C(t *testing.T) {
	p := Propagator()
	in := http.Header{}
	in.Set("X-B3-TraceId", "463ac35c9f6413ad48485a3953bb6124")
	in.Set("X-B3-SpanId", "a2fb4a1d1a96d312")
	in.Set("X-B3-Sampled", "1")
	sc := trace.SpanContextFromContext(p.Extract(context.Background(), propagation.HeaderCarrier(in)))
	if sc.TraceID().String() != "463ac35c9f6413ad48485a3953bb6124" || !sc.IsSampled() || !sc.IsRemote() {
		t.Fatalf("B3 headers gave %v", sc)
	}

	in.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	sc = trace.SpanContextFromContext(p.Extract(context.Background(), propagation.HeaderCarrier(in)))
	if sc.TraceID().String() != "0af7651916cd43dd8448eb211c80319c" {
		t.Errorf("with both, got trace %s, want the W3C one", sc.TraceID())
	}

	out := http.Header{}
	p.Inject(trace.ContextWithSpanContext(context.Background(), sc), propagation.HeaderCarrier(out))
	if out.Get("traceparent") != "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" {
		t.Errorf("traceparent %q", out.Get("traceparent"))
	}
	for k := range out {
		if k == "B3" || k == "X-B3-Traceid" {
			t.Errorf("B3 header %s written", k)
		}
	}
}

// The carrier replaces a header rather than adding a second one, and reads case-insensitively.
func TestKafkaHeaderCarrier(t *testing.T) {
	msg := kafka.Message{Headers: []kafka.Header{{Key: "ce_id", Value: []byte("1")}, {Key: "Traceparent", Value: []byte("old")}}}
	c := KafkaCarrier(&msg)
	if c.Get("traceparent") != "old" {
		t.Errorf("Get = %q", c.Get("traceparent"))
	}
	c.Set("traceparent", "new")
	if len(msg.Headers) != 2 || c.Get("TRACEPARENT") != "new" || string(msg.Headers[0].Value) != "1" {
		t.Errorf("after Set: %+v", msg.Headers)
	}
	if keys := c.Keys(); len(keys) != 2 {
		t.Errorf("Keys = %v", keys)
	}
}

// Reflected values lose their credentials; everything else, and the caller's slice, is untouched.
func TestRedactFields(t *testing.T) {
	type auth struct {
		User     string
		Password string
		Nested   map[string]string
	}
	in := []zapcore.Field{
		zap.Any("auth", auth{User: "u", Password: "p4ss", Nested: map[string]string{"api_token": "t0k", "mode": "x"}}),
		zap.String("password", "explicit strings are the author's choice"),
		zap.Any("plain", map[string]int{"count": 3}),
	}
	out := redactFields(in)
	if in[0].Type != zapcore.ReflectType || in[0].Interface.(auth).Password != "p4ss" {
		t.Error("the caller's field was changed")
	}
	got := out[0].Interface.(map[string]any)
	if got["Password"] != redacted || got["User"] != "u" || got["Nested"].(map[string]any)["api_token"] != redacted || got["Nested"].(map[string]any)["mode"] != "x" {
		t.Errorf("redacted to %v", got)
	}
	if out[1].String != in[1].String || out[2].Interface == nil {
		t.Errorf("other fields changed: %+v", out[1:])
	}
}
