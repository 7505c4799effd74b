package dispatcher

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Knative's dead-letter extensions.
const (
	ExtErrorDest = "knativeerrordest"
	ExtErrorCode = "knativeerrorcode"
	ExtErrorData = "knativeerrordata"
)

const (
	// maxResponseBody bounds what is read of a response: a reply event has to fit.
	maxResponseBody = 8 << 20
	// maxErrorData bounds knativeerrordata (before base64), as Knative does.
	maxErrorData = 1024
)

// Destination kinds, the `destination` label of the delivery metrics.
const (
	destSubscriber = "subscriber"
	destReply      = "reply"
	destDeadLetter = "deadletter"
)

// codeClassReplyTooLarge is the code_class of a 2xx attempt whose reply exceeded
// maxResponseBody: a failed attempt, since the reply could be neither read whole nor dropped
// silently.
const codeClassReplyTooLarge = "reply_too_large"

const tracerName = "github.com/kafkachannel/kafkachannel/dispatcher"

// destination is one URL events are POSTed to, with the client that trusts its CAs, and the
// OIDC audience and service account its requests are authenticated with (secureRequest).
type destination struct {
	kind           string
	uri            string
	client         *http.Client
	audience       string
	serviceAccount string
}

// outcome is the last attempt of a delivery.
type outcome struct {
	code   int
	body   []byte
	reply  *event.Event
	err    error
	reason string // code class of the last attempt
	// location is where a 3xx pointed (refuseRedirect): said in logs and knativeerrordata,
	// since a redirect's body rarely explains it.
	location string
}

func (o outcome) ok() bool { return o.err == nil && o.code >= 200 && o.code < 300 }

// describe is the one-line reason used in logs and in knativeerrordata when there is no body.
func (o outcome) describe() string {
	if o.err != nil {
		return o.err.Error()
	}
	if o.code >= 300 && o.code < 400 {
		return fmt.Sprintf("HTTP %d redirect to %q, not followed: the destination must accept the event at its own URL", o.code, o.location)
	}
	return fmt.Sprintf("HTTP %d", o.code)
}

// outgoing is an event as send POSTs it: its id, for spans and logs, and its binding message,
// which is either a decoded event or a binary-mode record passed through as it is
// (kafkabinding.Binary), written again for each attempt.
type outgoing struct {
	id  string
	msg binding.Message
}

func eventOut(ev *event.Event) outgoing { return outgoing{id: ev.ID(), msg: binding.ToMessage(ev)} }

// send POSTs out to dst (binary mode unless the delivery format is json) and retries per pol. It returns early, without a
// verdict, only when ctx ends (the caller then leaves the record uncommitted).
func (s *subscription) send(ctx context.Context, dst destination, out outgoing, pol Policy) outcome {
	ctx, span := otel.Tracer(tracerName).Start(ctx, "deliver "+dst.kind, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("url.full", dst.uri), attribute.String("cloudevents.event_id", out.id)))
	defer span.End()
	var last outcome
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			s.d.metrics.retries.WithLabelValues(s.group, dst.kind).Inc()
		}
		var hdr http.Header
		last, hdr = s.attempt(ctx, dst, out, pol)
		s.d.metrics.deliveries.WithLabelValues(s.group, dst.kind, last.reason).Inc()
		if last.ok() || ctx.Err() != nil {
			break
		}
		if last.err == nil && !retryable(last.code) {
			break
		}
		if attempt >= pol.Retries {
			break
		}
		wait := pol.Backoff(attempt + 1)
		if last.code == http.StatusTooManyRequests || last.code == http.StatusServiceUnavailable {
			if ra := min(retryAfter(hdr.Get("Retry-After"), time.Now()), pol.RetryAfterMax); ra > wait {
				wait = ra
			}
		}
		if !sleep(ctx, wait) {
			break
		}
	}
	span.SetAttributes(attribute.Int("http.response.status_code", last.code))
	if !last.ok() {
		span.SetStatus(codes.Error, last.describe())
	}
	return last
}

// KnNamespaceHeader carries the channel's namespace on each delivery, as Knative's own channel
// dispatchers send it.
const KnNamespaceHeader = "Kn-Namespace"

func (s *subscription) attempt(ctx context.Context, dst destination, out outgoing, pol Policy) (outcome, http.Header) {
	actx, cancel := context.WithTimeout(ctx, pol.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, dst.uri, nil)
	if err != nil {
		return outcome{err: fmt.Errorf("building the request to %s: %w", dst.uri, err), reason: "error"}, nil
	}
	wctx := binding.WithForceBinary(actx)
	if pol.Structured {
		wctx = binding.WithForceStructured(actx)
	}
	if err := cehttp.WriteRequest(wctx, out.msg, req); err != nil {
		return outcome{err: fmt.Errorf("encoding event %s for %s: %w", out.id, dst.uri, err), reason: "error"}, nil
	}
	otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(req.Header))
	// Knative's channel dispatchers name the channel's namespace on every delivery; receivers
	// (and Knative's conformance suite, at the dead-letter sink) rely on it.
	req.Header.Set(KnNamespaceHeader, s.d.cfg.ChannelNamespace)
	if dst.kind == destSubscriber {
		// A subscriber may answer with an event (the reply), with or without a reply
		// destination; Knative's dispatchers say so to every subscriber.
		req.Header.Set("Prefer", "reply")
	}
	if err := s.secureRequest(actx, dst, req); err != nil {
		return outcome{err: err, reason: "error"}, nil
	}
	resp, err := dst.client.Do(req)
	if err != nil {
		reason, err := classify(err, dst, ctx)
		return outcome{err: err, reason: reason}, nil
	}
	defer resp.Body.Close()
	// One byte more than the limit tells a reply that fits from one that does not.
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody+1))
	// Drain what is left so the connection goes back to the pool.
	_, _ = io.Copy(io.Discard, resp.Body)
	o := outcome{code: resp.StatusCode, body: body, reason: strconv.Itoa(resp.StatusCode/100) + "xx"}
	if o.code >= 300 && o.code < 400 {
		o.location = resp.Header.Get("Location")
		o.body = nil
	}
	if err != nil && o.ok() {
		o.err = fmt.Errorf("reading the response of %s: %w", dst.uri, err)
		o.reason = "error"
		return o, resp.Header
	}
	if len(body) > maxResponseBody {
		if !o.ok() || dst.kind != destSubscriber {
			// Only a subscriber's 2xx body is a reply; elsewhere the start is all that is used.
			o.body = body[:maxResponseBody]
			return o, resp.Header
		}
		// Forwarding a cut reply would alter an event, dropping it would lose one: the
		// attempt failed. body is left empty so knativeerrordata carries this message.
		o.body = nil
		o.err = fmt.Errorf("%s %s replied with a body over the %d MiB limit; the reply was neither forwarded nor dropped, the delivery failed", dst.kind, dst.uri, maxResponseBody>>20)
		o.reason = codeClassReplyTooLarge
		s.log.Info("reply over the size limit: delivery attempt failed", "url", dst.uri, "limitBytes", maxResponseBody, "id", out.id)
		return o, resp.Header
	}
	if o.ok() {
		o.reply = replyEvent(ctx, resp.Header, body)
	}
	return o, resp.Header
}

// replyEvent decodes the event a subscriber answered with, if any.
func replyEvent(ctx context.Context, h http.Header, body []byte) *event.Event {
	msg := cehttp.NewMessage(h, io.NopCloser(bytes.NewReader(body)))
	if msg.ReadEncoding() == binding.EncodingUnknown {
		return nil
	}
	e, err := binding.ToEvent(ctx, msg)
	if err != nil || e.Validate() != nil {
		return nil
	}
	return e
}

// classify turns a transport error into a metric label and a message a user can act on;
// above all a TLS failure says which CA bundle to set.
func classify(err error, dst destination, ctx context.Context) (string, error) {
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var recErr tls.RecordHeaderError
	field := "subscriberCACerts"
	switch dst.kind {
	case destReply:
		field = "replyCACerts"
	case destDeadLetter:
		field = "deadLetterSink CACerts"
	}
	switch {
	case errors.As(err, &certErr), errors.As(err, &unknownCA), errors.As(err, &hostErr):
		return "tls", fmt.Errorf("TLS handshake with %s %s failed, its certificate is not trusted (set %s to the CA that signed it): %w", dst.kind, dst.uri, field, err)
	case errors.As(err, &recErr):
		return "tls", fmt.Errorf("TLS to %s %s failed (does it speak https?): %w", dst.kind, dst.uri, err)
	case ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
		return "timeout", fmt.Errorf("%s %s did not answer within the delivery timeout: %w", dst.kind, dst.uri, err)
	}
	var nerr net.Error
	if errors.As(err, &nerr) && nerr.Timeout() {
		return "timeout", fmt.Errorf("%s %s did not answer within the delivery timeout: %w", dst.kind, dst.uri, err)
	}
	return "error", fmt.Errorf("posting to %s %s: %w", dst.kind, dst.uri, err)
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// withErrorExtensions copies ev and adds Knative's dead-letter extensions.
func withErrorExtensions(ev *event.Event, dest string, o outcome) *event.Event {
	c := ev.Clone()
	c.SetExtension(ExtErrorDest, dest)
	if o.code != 0 {
		c.SetExtension(ExtErrorCode, strconv.Itoa(o.code))
	}
	data := o.body
	if len(data) == 0 {
		data = []byte(o.describe())
	}
	if len(data) > maxErrorData {
		data = data[:maxErrorData]
	}
	c.SetExtension(ExtErrorData, base64.StdEncoding.EncodeToString(data))
	return &c
}

// refuseRedirect makes a 3xx the answer of an attempt instead of a request to follow. The
// Knative data-plane contract counts a 3xx as an error that completes no delivery and is not
// retried; following it is what Go's client does by default, and for 301, 302 and 303 it
// repeats the POST as a GET without the event, so a login page's 200 would commit the offset
// of an event delivered nowhere. Subscriber, reply and dead-letter sink share this client.
func refuseRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// newHTTPTransport is tuned for many concurrent deliveries to few hosts: Go's default keeps two
// idle connections per host, which makes busy partitions open a connection per event. It opens
// at most maxConns connections to one host and keeps as many idle: with more deliveries in
// flight than idle connections kept (50 subscribers x 8 partitions x 16 in unordered mode), each
// surplus connection was dialed for one request and closed after it. A delivery beyond the cap
// waits for a connection, within its attempt timeout.
func newHTTPTransport(tlsCfg *tls.Config, maxConns int) *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          4 * maxConns,
		MaxIdleConnsPerHost:   maxConns,
		MaxConnsPerHost:       maxConns,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		TLSClientConfig:       tlsCfg,
		ForceAttemptHTTP2:     true,
	}
}

// trustPool is the system roots plus a PEM bundle.
func trustPool(pem string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM([]byte(pem)) {
		return nil, errors.New("no PEM certificate found")
	}
	return pool, nil
}
