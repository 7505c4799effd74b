package observability

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	// Deprecated upstream (removal announced for 2027), but config-tracing's backend: zipkin is
	// what Knative users configure today; otlp is offered beside it.
	"go.opentelemetry.io/otel/exporters/zipkin" //nolint:staticcheck // see above
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// exporterShutdownTimeout bounds how long a replaced exporter may take to send what it holds:
// a dead collector must not hold up the new configuration or the process' exit.
const exporterShutdownTimeout = 10 * time.Second

// Propagator is what this project puts on and reads from HTTP requests and Kafka records:
// W3C Trace Context and Baggage, and B3 (single or multi header) read only, so requests from
// Zipkin-instrumented senders continue their trace. W3C comes last and wins when both are there.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(
		extractOnly{b3.New(b3.WithInjectEncoding(b3.B3MultipleHeader))},
		propagation.TraceContext{},
		propagation.Baggage{},
	)
}

// extractOnly reads a propagation format without writing it: one format on the wire is enough.
type extractOnly struct{ propagation.TextMapPropagator }

func (extractOnly) Inject(context.Context, propagation.TextMapCarrier) {}
func (extractOnly) Fields() []string                                   { return nil }

// tracing owns one SDK TracerProvider for the life of the process (set as the otel global once,
// so tracers taken from it early keep working) and swaps its sampler and exporter underneath as
// config-tracing changes.
type tracing struct {
	provider *sdktrace.TracerProvider
	sampler  *swapSampler
	proc     *swapProcessor
	log      logr.Logger
	// exporter, when set, replaces the configured backend (tests use an in-memory one).
	exporter sdktrace.SpanExporter

	mu      sync.Mutex
	current *TracingConfig
	retired sync.WaitGroup
}

func newTracing(component string, log logr.Logger, exporter sdktrace.SpanExporter) *tracing {
	t := &tracing{sampler: &swapSampler{}, proc: &swapProcessor{}, log: log, exporter: exporter}
	t.sampler.s.Store(&samplerBox{sdktrace.NeverSample()})
	attrs := []attribute.KeyValue{
		attribute.String("service.name", "kafkachannel-"+component),
		attribute.String("service.namespace", "kafkachannel"),
	}
	if v := os.Getenv("POD_NAME"); v != "" {
		attrs = append(attrs, attribute.String("k8s.pod.name", v))
	}
	if v := os.Getenv("POD_NAMESPACE"); v != "" {
		attrs = append(attrs, attribute.String("k8s.namespace.name", v))
	}
	t.provider = sdktrace.NewTracerProvider(
		sdktrace.WithResource(resource.NewSchemaless(attrs...)),
		sdktrace.WithSampler(t.sampler),
		sdktrace.WithSpanProcessor(t.proc),
	)
	return t
}

// apply switches to c; spans already ended go out through the exporter they were ended under.
func (t *tracing) apply(c TracingConfig) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.current != nil && *t.current == c {
		return nil
	}
	exp, err := t.newExporter(c)
	if err != nil {
		return err
	}
	var next sdktrace.SpanProcessor
	sampler := sdktrace.NeverSample()
	if exp != nil {
		next = sdktrace.NewBatchSpanProcessor(exp)
		sampler = samplerFor(c)
	}
	// Sampler first: a span sampled under the new rules must find the new exporter, and the
	// worst a span started in between suffers is to go to the old exporter before it shuts down.
	t.sampler.s.Store(&samplerBox{sampler})
	old := t.proc.swap(next)
	if old != nil {
		t.retired.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), exporterShutdownTimeout)
			defer cancel()
			if err := old.Shutdown(ctx); err != nil {
				t.log.Error(err, "flushing spans to the previous tracing backend")
			}
		})
	}
	t.current = &c
	t.log.Info("tracing configured", "backend", c.Backend, "sampleRate", c.SampleRate, "debug", c.Debug,
		"sampler", sampler.Description())
	return nil
}

func (t *tracing) newExporter(c TracingConfig) (sdktrace.SpanExporter, error) {
	if t.exporter != nil {
		if c.Backend == BackendNone {
			return nil, nil
		}
		return nonClosing{t.exporter}, nil
	}
	switch c.Backend {
	case BackendZipkin:
		exp, err := zipkin.New(c.ZipkinEndpoint, zipkin.WithLogr(t.log),
			zipkin.WithClient(&http.Client{Timeout: exporterShutdownTimeout}))
		if err != nil {
			return nil, fmt.Errorf("creating the Zipkin exporter for %s: %w", c.ZipkinEndpoint, err)
		}
		return exp, nil
	case BackendOTLP:
		exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(c.OTLPEndpoint))
		if err != nil {
			return nil, fmt.Errorf("creating the OTLP/HTTP exporter for %s: %w", c.OTLPEndpoint, err)
		}
		return exp, nil
	}
	return nil, nil
}

// samplerFor follows Knative's meaning of the keys: debug samples everything; sample-rate 0
// samples nothing, not even requests whose caller sampled them (an operator who set 0 wants
// no spans sent); otherwise a caller's decision is kept and new traces are sampled at the rate.
func samplerFor(c TracingConfig) sdktrace.Sampler {
	switch {
	case c.Debug:
		return sdktrace.AlwaysSample()
	case c.SampleRate <= 0:
		return sdktrace.NeverSample()
	default:
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.SampleRate))
	}
}

// flush sends every ended span to the current exporter.
func (t *tracing) flush(ctx context.Context) error {
	return t.provider.ForceFlush(ctx)
}

// shutdown flushes and stops; spans ended afterwards are dropped.
func (t *tracing) shutdown(ctx context.Context) error {
	err := t.provider.Shutdown(ctx)
	done := make(chan struct{})
	go func() { t.retired.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		err = errors.Join(err, fmt.Errorf("waiting for replaced tracing exporters: %w", ctx.Err()))
	}
	return err
}

type samplerBox struct{ sdktrace.Sampler }

// swapSampler lets the provider's sampler change after construction, which the SDK does not offer.
type swapSampler struct{ s atomic.Pointer[samplerBox] }

func (s *swapSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	return s.s.Load().ShouldSample(p)
}

func (s *swapSampler) Description() string { return "Swappable{" + s.s.Load().Description() + "}" }

// swapProcessor is the provider's only span processor; it forwards to the batch processor of
// the current backend, or drops spans when there is none. Swapping it in place, rather than
// registering and unregistering processors on the provider, keeps a slow or dead collector
// (whose shutdown may block) from holding the provider's lock.
type swapProcessor struct {
	p atomic.Pointer[processorBox]
}

type processorBox struct{ sdktrace.SpanProcessor }

// swap installs next (nil drops spans) and returns the processor it replaced, or nil.
func (s *swapProcessor) swap(next sdktrace.SpanProcessor) sdktrace.SpanProcessor {
	var box *processorBox
	if next != nil {
		box = &processorBox{next}
	}
	if old := s.p.Swap(box); old != nil {
		return old.SpanProcessor
	}
	return nil
}

func (s *swapProcessor) OnStart(ctx context.Context, span sdktrace.ReadWriteSpan) {
	if p := s.p.Load(); p != nil {
		p.OnStart(ctx, span)
	}
}

func (s *swapProcessor) OnEnd(span sdktrace.ReadOnlySpan) {
	if p := s.p.Load(); p != nil {
		p.OnEnd(span)
	}
}

func (s *swapProcessor) Shutdown(ctx context.Context) error {
	if p := s.p.Swap(nil); p != nil {
		return p.Shutdown(ctx)
	}
	return nil
}

func (s *swapProcessor) ForceFlush(ctx context.Context) error {
	if p := s.p.Load(); p != nil {
		return p.ForceFlush(ctx)
	}
	return nil
}

// nonClosing keeps a caller-owned exporter open across configuration swaps.
type nonClosing struct{ sdktrace.SpanExporter }

func (nonClosing) Shutdown(context.Context) error { return nil }

// installGlobals makes this provider and Propagator the otel globals the other packages use.
func (t *tracing) installGlobals() {
	otel.SetTracerProvider(t.provider)
	otel.SetTextMapPropagator(Propagator())
	// Export failures (collector down, endpoint wrong) surface in the component's log.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { t.log.Error(err, "OpenTelemetry") }))
}
