// Package receiver is the way into every KafkaChannel: an HTTP server that takes CloudEvents
// posted to a channel's address and writes each one to the channel's Kafka topic, answering
// 202 only once Kafka has acknowledged the record (acks=all), per the Knative channel data plane
// contract:
//
//   - the Host header (the channel's address, naming.ChannelHost, also as "<svc>.<ns>.svc",
//     "<svc>.<ns>", with or without a port) or the path "/<namespace>/<name>" on any host selects
//     the channel; unknown channel: 404
//   - POST only, anything else: 405 with "Allow: POST"
//   - plain http while config-features' transport-encryption is strict: 403 (https only)
//   - with authentication-oidc enabled: no valid service-account token for the channel's
//     audience: 401; a sender no EventPolicy of the channel (or, without any, the default
//     authorization mode) admits: 403, and nothing is written
//     (all of this is decided on the headers, before the body is read; policies with
//     filters judge the decoded event too)
//   - the channel's topic is not ready (TopicReady not True) or it is being deleted: 503
//   - a body over Config.MaxBodyBytes: 413
//   - the bodies held at once would exceed Config.BodyBudgetBytes: 503 with Retry-After
//   - a body that stops arriving for Config.BodyIdleTimeout: 408
//   - batched mode (application/cloudevents-batch+json): 415, since a batch could only be
//     written partly and the contract forbids half-accepting it
//   - not a valid CloudEvent (binary or structured mode; v1.0 and v0.3, never converted): 400
//   - Kafka unavailable, too slow or refusing the record: 503 (retry) or 500 (refused for good)
//
// Every rejection carries its reason as a text/plain body. Health and metrics are served by the
// admin server (internal/observability), not on the event port.
package receiver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/kafkachannel/kafkachannel/internal/eventpolicy"
	"github.com/kafkachannel/kafkachannel/internal/features"
	"github.com/kafkachannel/kafkachannel/internal/kafkabinding"
	"github.com/kafkachannel/kafkachannel/internal/kafkaconn"
	"github.com/kafkachannel/kafkachannel/internal/observability"
	"github.com/kafkachannel/kafkachannel/internal/oidc"
)

// Defaults of Config.
const (
	// DefaultMaxBodyBytes is Kafka's default max.message.bytes (about 1 MiB): a larger event
	// would be refused by the broker anyway.
	DefaultMaxBodyBytes = 1 << 20
	// DefaultProduceTimeout bounds the wait for Kafka's acknowledgement before answering 503.
	DefaultProduceTimeout = 10 * time.Second
)

const tracerName = "github.com/kafkachannel/kafkachannel/receiver"

// Config of a Receiver. Channels and Writer are required.
type Config struct {
	// Channels says which channels exist and whether they are ready.
	Channels *Index
	// Writer writes the records; it is shared by all requests and closed by Shutdown.
	Writer MessageWriter
	// Kafka, when set, explains Kafka errors (authentication, unreachable brokers) in replies.
	Kafka *kafkaconn.Config
	// Registry receives the receiver's metrics; nil means none are registered.
	Registry prometheus.Registerer
	Log      logr.Logger
	// MaxBodyBytes is the largest event body accepted; default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// BodyBudgetBytes bounds the bytes of all request bodies held at once, from the first
	// byte read until Kafka has answered; a request that would exceed it gets 503 with
	// Retry-After. Default DefaultBodyBudget(); at least MaxBodyBytes.
	BodyBudgetBytes int64
	// BodyIdleTimeout is how long a body may go without a byte arriving before the request
	// is answered 408 and its connection closed; default DefaultBodyIdleTimeout.
	BodyIdleTimeout time.Duration
	// ProduceTimeout bounds the wait for Kafka; default DefaultProduceTimeout.
	ProduceTimeout time.Duration
	// Features is config-features, followed live; nil means its defaults.
	Features *features.Live
	// TLS, when set, is the configuration of the https listener (Run's tlsAddr, StartTLS).
	TLS *tls.Config
	// Auth authenticates and authorizes senders while authentication-oidc is enabled.
	Auth *Auth
}

// Receiver is the event endpoint. It is an http.Handler; Start/Serve and Shutdown run it as a
// server of its own.
type Receiver struct {
	cfg        Config
	log        logr.Logger
	metrics    *metrics
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	budget     *byteBudget
	// unwatch stops forgetting the metrics of deleted channels, at Shutdown.
	unwatch func()

	mu      sync.Mutex
	srvs    []*http.Server
	addr    net.Addr
	tlsAddr net.Addr
	closed  bool

	shutdownOnce sync.Once
	closeErr     error
}

// New checks the configuration and registers the metrics.
func New(cfg Config) (*Receiver, error) {
	if cfg.Channels == nil {
		return nil, errors.New("receiver: Config.Channels is required")
	}
	if cfg.Writer == nil {
		return nil, errors.New("receiver: Config.Writer is required")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.ProduceTimeout <= 0 {
		cfg.ProduceTimeout = DefaultProduceTimeout
	}
	if cfg.BodyBudgetBytes <= 0 {
		cfg.BodyBudgetBytes = max(DefaultBodyBudget(), cfg.MaxBodyBytes)
	}
	if cfg.BodyBudgetBytes < cfg.MaxBodyBytes {
		return nil, fmt.Errorf("receiver: the body budget (%d bytes) is smaller than the largest body accepted (%d bytes), which could then never be read",
			cfg.BodyBudgetBytes, cfg.MaxBodyBytes)
	}
	if cfg.BodyIdleTimeout <= 0 {
		cfg.BodyIdleTimeout = DefaultBodyIdleTimeout
	}
	budget := &byteBudget{limit: cfg.BodyBudgetBytes}
	m, err := newMetrics(cfg.Registry, budget)
	if err != nil {
		return nil, err
	}
	return &Receiver{
		cfg:        cfg,
		log:        cfg.Log,
		metrics:    m,
		tracer:     otel.Tracer(tracerName),
		propagator: incomingPropagator(),
		budget:     budget,
		unwatch:    cfg.Channels.OnDelete(m.forget),
	}, nil
}

// ServeHTTP handles one event.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	ctx := r.propagator.Extract(req.Context(), propagation.HeaderCarrier(req.Header))
	if trace.SpanContextFromContext(ctx).IsValid() {
		ctx = context.WithValue(ctx, senderTracedKey{}, true)
	}
	ctx, span := r.tracer.Start(ctx, "kafkachannel.receive", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attribute.String("http.request.method", req.Method),
			attribute.String("server.address", req.Host),
			attribute.String("url.path", req.URL.Path),
		))
	defer span.End()

	channel := unknownChannel
	code, reason := r.handle(ctx, w, req, &channel)

	span.SetAttributes(attribute.Int("http.response.status_code", code), attribute.String("kafkachannel.channel", channel))
	if code >= 500 {
		span.SetStatus(codes.Error, reason)
	}
	label := strconv.Itoa(code)
	r.metrics.events.WithLabelValues(channel, label).Inc()
	r.metrics.requestLatency.WithLabelValues(channel, label).Observe(time.Since(start).Seconds())
	if channel != unknownChannel && !r.cfg.Channels.has(channel) {
		// The channel was deleted while this request was in flight, after its series were
		// forgotten: the lines above made them anew.
		r.metrics.forget(channel)
	}

	if code == http.StatusAccepted {
		w.WriteHeader(code)
		return
	}
	if code >= 500 {
		r.log.Info("event not accepted", "channel", channel, "code", code, "reason", reason)
	} else {
		r.log.V(1).Info("event rejected", "channel", channel, "code", code, "reason", reason)
	}
	if code == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", http.MethodPost)
	}
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="kafkachannel"`)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = fmt.Fprintln(w, reason)
}

// handle decides the answer to one request; it writes nothing to w except through
// http.MaxBytesReader, which needs w to close an oversized connection, and a Retry-After.
// Everything that can be decided without the body is decided before reading it, so a sender
// that is refused anyway costs no more than its headers.
func (r *Receiver) handle(ctx context.Context, w http.ResponseWriter, req *http.Request, channel *string) (int, string) {
	if req.Method != http.MethodPost {
		return http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed: events are sent with POST", req.Method)
	}
	ch, rej := route(r.cfg.Channels, req)
	if rej != nil {
		return rej.code, rej.reason
	}
	*channel = ch.Key()
	f := r.cfg.Features.Get()
	if req.TLS == nil && !f.HTTPAllowed() {
		return http.StatusForbidden, fmt.Sprintf("channel %s accepts events over https only (transport-encryption is strict): send to its https address in status.address", ch.Key())
	}
	var sender oidc.Identity
	var judge []*eventpolicy.Policy
	if f.OIDC {
		var code int
		var reason string
		if sender, code, reason = r.authenticate(ctx, req, ch); code != 0 {
			return code, reason
		}
		if judge, code, reason = r.authorizeSender(sender, ch, f); code != 0 {
			return code, reason
		}
	}
	if !ch.Ready {
		return http.StatusServiceUnavailable, fmt.Sprintf("channel %s is not ready to accept events: %s", ch.Key(), ch.NotReadyReason)
	}
	body, taken, rej := r.readBody(w, req)
	// The body's share of the budget is held until Kafka has answered: the record built
	// from it lives as long.
	defer r.budget.give(taken)
	if rej != nil {
		return rej.code, rej.reason
	}
	e, rej := decodeEvent(ctx, req, body)
	if rej != nil {
		return rej.code, rej.reason
	}
	if judge != nil {
		// Policies that name the sender and filter on the event's attributes.
		if code, reason := authorizeEvent(judge, sender, ch, e, f); code != 0 {
			return code, reason
		}
	}
	return r.produce(ctx, ch, e)
}

// produce writes the event to the channel's topic and waits for Kafka's acknowledgement.
func (r *Receiver) produce(ctx context.Context, ch Channel, e *event.Event) (int, string) {
	ctx, span := r.tracer.Start(ctx, ch.Topic+" publish", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("messaging.system", "kafka"),
			attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.destination.name", ch.Topic),
			attribute.String("cloudevents.event_id", e.ID()),
			attribute.String("cloudevents.event_type", e.Type()),
			attribute.String("cloudevents.event_source", e.Source()),
		))
	defer span.End()

	setTraceExtension(ctx, e)
	msg, err := kafkabinding.ToMessage(e)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return http.StatusBadRequest, fmt.Sprintf("the event cannot be written as a Kafka record: %v", err)
	}
	msg.Topic = ch.Topic
	observability.InjectKafka(ctx, &msg)

	wctx, cancel := context.WithTimeout(ctx, r.cfg.ProduceTimeout)
	defer cancel()
	start := time.Now()
	err = r.cfg.Writer.WriteMessages(wctx, msg)
	result := "ok"
	if err != nil {
		result = "error"
	}
	r.metrics.produceLatency.WithLabelValues(ch.Key(), result).Observe(time.Since(start).Seconds())
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		code, reason := writeFailure(err, r.cfg.ProduceTimeout, r.cfg.Kafka)
		r.log.V(1).Info("writing an event to Kafka failed", "channel", ch.Key(), "topic", ch.Topic, "error", err.Error())
		return code, reason
	}
	return http.StatusAccepted, ""
}

// Start listens on addr (":8080", "127.0.0.1:0") and serves in the background; it returns once
// the port is bound. Addr tells the bound address.
func (r *Receiver) Start(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("receiver listening on %s: %w", addr, err)
	}
	go func() {
		if err := r.Serve(ln); err != nil {
			r.log.Error(err, "receiver stopped serving")
		}
	}()
	return nil
}

// StartTLS is Start for the https listener with Config.TLS; TLSAddr tells the bound address.
func (r *Receiver) StartTLS(addr string) error {
	if r.cfg.TLS == nil {
		return errors.New("receiver: StartTLS needs Config.TLS")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("receiver listening for https on %s: %w", addr, err)
	}
	go func() {
		if err := r.serve(ln, true); err != nil {
			r.log.Error(err, "receiver stopped serving https")
		}
	}()
	return nil
}

// Serve serves events on ln until Shutdown; it returns nil after a Shutdown.
func (r *Receiver) Serve(ln net.Listener) error { return r.serve(ln, false) }

// serve serves on ln, over TLS with Config.TLS when secure.
func (r *Receiver) serve(ln net.Listener, secure bool) error {
	srv := &http.Server{
		Handler: r,
		// Headers are a few hundred bytes: a sender that cannot send them in 5 s is stuck or
		// holding the connection on purpose.
		ReadHeaderTimeout: 5 * time.Second,
		// The whole request; the body is also cut off after BodyIdleTimeout without a byte.
		ReadTimeout: bodyTimeout,
		IdleTimeout: 2 * time.Minute,
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		_ = ln.Close()
		return errors.New("receiver: Serve after Shutdown")
	}
	r.srvs = append(r.srvs, srv)
	if secure {
		r.tlsAddr = ln.Addr()
		srv.TLSConfig = r.cfg.TLS
		ln = tls.NewListener(ln, r.cfg.TLS)
	} else {
		r.addr = ln.Addr()
	}
	r.mu.Unlock()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("receiver serving on %s: %w", ln.Addr(), err)
	}
	return nil
}

// TLSAddr is the address StartTLS or Run serve https on, nil before.
func (r *Receiver) TLSAddr() net.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tlsAddr
}

// Addr is the address Start or Serve listens on, nil before.
func (r *Receiver) Addr() net.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.addr
}

// Run serves on addr (and https on tlsAddr, when given, with Config.TLS) until ctx ends, then
// shuts down gracefully within grace.
func (r *Receiver) Run(ctx context.Context, addr, tlsAddr string, grace time.Duration) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("receiver listening on %s: %w", addr, err)
	}
	errc := make(chan error, 2)
	if tlsAddr != "" {
		if r.cfg.TLS == nil {
			_ = ln.Close()
			return errors.New("receiver: https needs Config.TLS")
		}
		tln, err := net.Listen("tcp", tlsAddr)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("receiver listening for https on %s: %w", tlsAddr, err)
		}
		go func() { errc <- r.serve(tln, true) }()
	}
	go func() { errc <- r.Serve(ln) }()
	select {
	case err := <-errc:
		// One listener failed: stop the other too, the pod restarts whole.
		sctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		return errors.Join(err, r.Shutdown(sctx))
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	return r.Shutdown(sctx)
}

// Shutdown stops accepting connections, waits for the requests in flight (each waits for
// Kafka's answer) until ctx ends, then flushes and closes the writer. It is safe to call more
// than once; later calls return the first result.
func (r *Receiver) Shutdown(ctx context.Context) error {
	r.shutdownOnce.Do(func() {
		r.unwatch()
		r.mu.Lock()
		r.closed = true
		srvs := r.srvs
		r.mu.Unlock()
		var errs []error
		for _, srv := range srvs {
			if err := srv.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("waiting for requests in flight: %w", err))
			}
		}
		if err := r.cfg.Writer.Close(); err != nil {
			errs = append(errs, fmt.Errorf("flushing the Kafka writer: %w", err))
		}
		r.closeErr = errors.Join(errs...)
	})
	return r.closeErr
}
