package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/go-logr/logr"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/kafkachannel/kafkachannel/internal/kafkabinding"
	"github.com/kafkachannel/kafkachannel/internal/observability"
)

// Attributes of the CloudEvent that wraps a record which is not a CloudEvent, for the
// dead-letter sink.
const (
	UndecodableEventType = "dev.knative.kafkachannel.undecodable"
)

// handle processes one record; it reports whether the record is done with (delivered,
// dead-lettered, or lost for good and counted) and so may be committed. It returns false only
// when ctx ended first, leaving the record to be redelivered.
func (s *subscription) handle(ctx context.Context, msg *kafka.Message) bool {
	cfg := s.cfg.Load()
	ctx = observability.ExtractKafka(ctx, msg)
	ctx, span := otel.Tracer(tracerName).Start(ctx, "consume "+msg.Topic, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", "kafka"),
			attribute.String("messaging.destination.name", msg.Topic),
			attribute.String("messaging.consumer.group.name", s.group),
			attribute.Int("messaging.destination.partition.id", msg.Partition),
			attribute.Int64("messaging.kafka.offset", msg.Offset)))
	defer span.End()
	// The record's logger is built only when something is logged: zap's With encodes its
	// fields at once (~3 KB in 18 allocations for these), and a delivered event logs nothing.
	id := ""
	log := func() logr.Logger {
		l := s.log.WithValues("partition", msg.Partition, "offset", msg.Offset)
		if id != "" {
			l = l.WithValues("id", id)
		}
		return l
	}

	// A binary-mode 1.0 record goes out as it is, checked as ToEvent checks it; any other
	// form is decoded. The event of a passed-through record is built only if a dead letter
	// needs it.
	rec, err := kafkabinding.NewBinary(msg)
	var ev *event.Event
	if rec == nil && err == nil {
		ev, err = kafkabinding.ToEvent(msg)
	}
	if err != nil {
		s.d.metrics.discarded.WithLabelValues(s.group, "not_cloudevent").Inc()
		log().Info("skipping a record that is not a CloudEvent", "error", err.Error())
		if cfg.deadLetter.uri == "" {
			return true
		}
		raw := s.undecodable(msg)
		dest := cfg.subscriber.uri
		if dest == "" {
			dest = cfg.reply.uri
		}
		return s.deadLetter(ctx, cfg, withErrorExtensions(raw, dest, outcome{err: err}), "not_cloudevent", log)
	}
	var out outgoing
	typ := ""
	if rec != nil {
		out, typ = outgoing{id: rec.ID(), msg: rec}, rec.Type()
	} else {
		out, typ = eventOut(ev), ev.Type()
	}
	span.SetAttributes(attribute.String("cloudevents.event_id", out.id), attribute.String("cloudevents.event_type", typ))
	id = out.id
	failed := func(dest string, o outcome) *event.Event {
		if ev == nil {
			var err error
			if ev, err = kafkabinding.ToEvent(msg); err != nil {
				// NewBinary accepts only what ToEvent accepts (kafkabinding's tests); should
				// they ever disagree the record still reaches the dead-letter sink, as is.
				log().Info("a record passed through does not decode", "error", err.Error())
				ev = s.undecodable(msg)
			}
		}
		return withErrorExtensions(ev, dest, o)
	}

	if cfg.subscriber.uri == "" {
		// A subscription with only a reply forwards the event there.
		o := s.send(ctx, cfg.reply, out, cfg.policy)
		if o.ok() {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		log().Info("delivery to the reply failed", "error", o.describe())
		return s.deadLetter(ctx, cfg, failed(cfg.reply.uri, o), "reply_failed", log)
	}

	o := s.send(ctx, cfg.subscriber, out, cfg.policy)
	if !o.ok() {
		if ctx.Err() != nil {
			return false
		}
		log().Info("delivery failed after retries", "error", o.describe(), "retries", cfg.policy.Retries)
		return s.deadLetter(ctx, cfg, failed(cfg.subscriber.uri, o), "delivery_failed", log)
	}
	if o.reply == nil {
		return true
	}
	if cfg.reply.uri == "" {
		s.d.metrics.discarded.WithLabelValues(s.group, "reply_dropped").Inc()
		return true
	}
	// The original stays uncommitted until its reply is acknowledged.
	ro := s.send(ctx, cfg.reply, eventOut(o.reply), cfg.policy)
	if ro.ok() {
		return true
	}
	if ctx.Err() != nil {
		return false
	}
	// The original goes to the dead-letter sink, as Knative's dispatchers do: it is what a
	// replay of dead letters sends again (the subscriber then replies anew), and the reply's
	// destination in knativeerrordest says which hop failed.
	log().Info("delivering the reply failed after retries: dead-lettering the original event", "error", ro.describe(), "reply", o.reply.ID())
	return s.deadLetter(ctx, cfg, failed(cfg.reply.uri, ro), "reply_failed", log)
}

// deadLetter sends an event that could not be delivered to the dead-letter sink; without one,
// or when that fails too, the event is lost for good: counted and logged with its id.
func (s *subscription) deadLetter(ctx context.Context, cfg *subConfig, ev *event.Event, reason string, log func() logr.Logger) bool {
	if cfg.deadLetter.uri == "" {
		s.d.metrics.lost.WithLabelValues(s.group).Inc()
		log().Error(errors.New("no dead-letter sink configured"), "event lost", "id", ev.ID(), "reason", reason)
		return true
	}
	o := s.send(ctx, cfg.deadLetter, eventOut(ev), cfg.policy)
	if o.ok() {
		s.d.metrics.deadLettered.WithLabelValues(s.group, reason).Inc()
		return true
	}
	if ctx.Err() != nil {
		return false
	}
	s.d.metrics.lost.WithLabelValues(s.group).Inc()
	log().Error(errors.New(o.describe()), "event lost: the dead-letter sink failed too", "id", ev.ID(), "reason", reason)
	return true
}

// undecodable wraps a record that is not a CloudEvent, bytes unchanged, so it can be
// dead-lettered and inspected.
func (s *subscription) undecodable(msg *kafka.Message) *event.Event {
	e := event.New()
	e.SetID(fmt.Sprintf("%s-%d-%d", msg.Topic, msg.Partition, msg.Offset))
	e.SetSource(fmt.Sprintf("/apis/messaging.knative.dev/v1beta1/namespaces/%s/kafkachannels/%s", s.d.cfg.ChannelNamespace, s.d.cfg.ChannelName))
	e.SetType(UndecodableEventType)
	if !msg.Time.IsZero() {
		e.SetTime(msg.Time)
	}
	e.SetExtension("kafkapartition", strconv.Itoa(msg.Partition))
	e.SetExtension("kafkaoffset", strconv.FormatInt(msg.Offset, 10))
	ct := kafkabinding.Header(msg, kafkabinding.HeaderContentType)
	if ct == "" {
		ct = "application/octet-stream"
	}
	_ = e.SetData(ct, msg.Value)
	return &e
}
