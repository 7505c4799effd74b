package observability

import (
	"context"
	"strings"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
)

// KafkaHeaderCarrier lets a propagator read and write a Kafka record's headers, so trace
// context travels receiver -> topic -> dispatcher. Keys compare case-insensitively, like HTTP
// headers, because records may come from producers that capitalise them.
type KafkaHeaderCarrier struct {
	Headers *[]kafka.Header
}

var _ propagation.TextMapCarrier = KafkaHeaderCarrier{}

// KafkaCarrier is the carrier over msg's headers.
func KafkaCarrier(msg *kafka.Message) KafkaHeaderCarrier {
	return KafkaHeaderCarrier{Headers: &msg.Headers}
}

// Get returns the last value of key: a record that was re-produced may carry an older one first.
func (c KafkaHeaderCarrier) Get(key string) string {
	hs := *c.Headers
	for i := len(hs) - 1; i >= 0; i-- {
		if strings.EqualFold(hs[i].Key, key) {
			return string(hs[i].Value)
		}
	}
	return ""
}

// Set replaces every header named key with one holding value.
func (c KafkaHeaderCarrier) Set(key, value string) {
	hs := (*c.Headers)[:0:0]
	for _, h := range *c.Headers {
		if !strings.EqualFold(h.Key, key) {
			hs = append(hs, h)
		}
	}
	*c.Headers = append(hs, kafka.Header{Key: key, Value: []byte(value)})
}

// Keys lists the header names.
func (c KafkaHeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(*c.Headers))
	for _, h := range *c.Headers {
		keys = append(keys, h.Key)
	}
	return keys
}

// InjectKafka writes ctx's trace context into msg's headers with the global propagator
// (the receiver does this before producing).
func InjectKafka(ctx context.Context, msg *kafka.Message) {
	otel.GetTextMapPropagator().Inject(ctx, KafkaCarrier(msg))
}

// ExtractKafka returns ctx carrying the trace context in msg's headers (the dispatcher does
// this before starting its consume span).
func ExtractKafka(ctx context.Context, msg *kafka.Message) context.Context {
	return otel.GetTextMapPropagator().Extract(ctx, KafkaCarrier(msg))
}
