package receiver

import (
	"context"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
)

// CloudEvents distributed tracing extension attributes.
const (
	extTraceParent = "traceparent"
	extTraceState  = "tracestate"
)

// incomingPropagator reads the trace context of a request. The global propagator is whatever
// the tracing setup installed (a no-op until then); W3C Trace Context and B3 (single and
// multi header) are always understood, so senders' traces continue even before that. W3C runs
// last and so wins when a request carries both.
func incomingPropagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(
		otel.GetTextMapPropagator(),
		b3.New(),
		propagation.TraceContext{},
		propagation.Baggage{},
	)
}

// senderTracedKey marks a request whose sender sent a trace context.
type senderTracedKey struct{}

// setTraceExtension puts the current span's context into the event as the CloudEvents
// distributed tracing extension when the sender traced the request, unless the event already
// carries one: that one names the event's origin, which a hop must not replace. An event from
// an untraced sender stays unaltered; the record's W3C headers still carry the receiver's own
// trace to the dispatcher.
func setTraceExtension(ctx context.Context, e *cloudevents.Event) {
	if _, ok := e.Extensions()[extTraceParent]; ok {
		return
	}
	if traced, _ := ctx.Value(senderTracedKey{}).(bool); !traced {
		return
	}
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	tp := carrier.Get(extTraceParent)
	if tp == "" {
		return
	}
	e.SetExtension(extTraceParent, tp)
	if ts := carrier.Get(extTraceState); ts != "" {
		if _, ok := e.Extensions()[extTraceState]; !ok {
			e.SetExtension(extTraceState, ts)
		}
	}
}
