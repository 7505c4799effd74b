// Package kafkabinding is the CloudEvents Kafka protocol binding for kafka-go records, shared by
// the receiver (event -> record) and the dispatcher (record -> event). sdk-go's own Kafka
// bindings target other clients, and the spec is small: binary mode carries each attribute in a
// `ce_<name>` header and datacontenttype in `content-type`; structured mode carries the whole
// event as JSON with `content-type: application/cloudevents+json`.
package kafkabinding

import (
	"bytes"
	"errors"
	"fmt"
	"mime"
	"strings"

	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/segmentio/kafka-go"
)

const (
	// HeaderContentType carries datacontenttype in binary mode, the format in structured mode.
	HeaderContentType = "content-type"
	// PartitionKeyExtension becomes the record key (CloudEvents partitioning extension).
	PartitionKeyExtension = "partitionkey"

	prefix = "ce_"
)

// ErrNotCloudEvent is returned for a record that is neither binary nor structured CloudEvent.
var ErrNotCloudEvent = errors.New("record is not a CloudEvent")

var versions = spec.WithPrefix(prefix)

// ToMessage encodes an event as a binary-mode record. The event's spec version is kept as is.
func ToMessage(e *event.Event) (kafka.Message, error) {
	if e == nil {
		return kafka.Message{}, errors.New("nil event")
	}
	if err := e.Validate(); err != nil {
		return kafka.Message{}, fmt.Errorf("invalid CloudEvent: %w", err)
	}
	v := versions.Version(e.SpecVersion())
	if v == nil {
		return kafka.Message{}, fmt.Errorf("unsupported CloudEvents specversion %q", e.SpecVersion())
	}
	msg := kafka.Message{Value: e.Data()}
	headers := make([]kafka.Header, 0, 8+len(e.Extensions()))
	for _, a := range v.Attributes() {
		val := a.Get(e.Context)
		if val == nil {
			continue
		}
		s, err := types.Format(val)
		if err != nil {
			return kafka.Message{}, fmt.Errorf("attribute %s: %w", a.Name(), err)
		}
		if a.Kind() == spec.DataContentType {
			headers = append(headers, kafka.Header{Key: HeaderContentType, Value: []byte(s)})
			continue
		}
		if s == "" && !a.Kind().IsRequired() {
			continue
		}
		headers = append(headers, kafka.Header{Key: a.PrefixedName(), Value: []byte(s)})
	}
	for name, val := range e.Extensions() {
		s, err := types.Format(val)
		if err != nil {
			return kafka.Message{}, fmt.Errorf("extension %s: %w", name, err)
		}
		headers = append(headers, kafka.Header{Key: prefix + name, Value: []byte(s)})
		if name == PartitionKeyExtension {
			msg.Key = []byte(s)
		}
	}
	msg.Headers = headers
	return msg, nil
}

// ToEvent decodes a binary or structured record. Records that carry no CloudEvent give an
// error wrapping ErrNotCloudEvent, so callers can skip them without stalling a partition.
func ToEvent(msg *kafka.Message) (*event.Event, error) {
	ct := Header(msg, HeaderContentType)
	if mediaType(ct) == event.ApplicationCloudEventsBatchJSON {
		return nil, fmt.Errorf("%w: batched structured mode is not supported in records", ErrNotCloudEvent)
	}
	if f := format.Lookup(ct); f != nil {
		e := event.New()
		if err := f.Unmarshal(msg.Value, &e); err != nil {
			return nil, fmt.Errorf("%w: structured mode: %v", ErrNotCloudEvent, err)
		}
		if err := e.Validate(); err != nil {
			return nil, fmt.Errorf("%w: structured mode: %v", ErrNotCloudEvent, err)
		}
		return &e, nil
	}

	sv := Header(msg, versions.PrefixedSpecVersionName())
	if sv == "" {
		return nil, fmt.Errorf("%w: no %s header and content-type %q", ErrNotCloudEvent, versions.PrefixedSpecVersionName(), ct)
	}
	v := versions.Version(sv)
	if v == nil {
		return nil, fmt.Errorf("%w: unsupported specversion %q", ErrNotCloudEvent, sv)
	}
	ctx := v.NewContext()
	for _, h := range msg.Headers {
		name := strings.ToLower(h.Key)
		if !strings.HasPrefix(name, prefix) || name == versions.PrefixedSpecVersionName() {
			continue
		}
		if a := v.Attribute(name); a != nil {
			if err := a.Set(ctx, string(h.Value)); err != nil {
				return nil, fmt.Errorf("%w: attribute %s: %v", ErrNotCloudEvent, a.Name(), err)
			}
			continue
		}
		if err := ctx.SetExtension(strings.TrimPrefix(name, prefix), string(h.Value)); err != nil {
			return nil, fmt.Errorf("%w: extension %s: %v", ErrNotCloudEvent, name, err)
		}
	}
	if ct != "" {
		if err := ctx.SetDataContentType(ct); err != nil {
			return nil, fmt.Errorf("%w: content-type: %v", ErrNotCloudEvent, err)
		}
	}
	e := event.Event{Context: ctx}
	if len(msg.Value) > 0 {
		// Copy: kafka-go may reuse the record's buffer after the next fetch.
		e.DataEncoded = bytes.Clone(msg.Value)
	}
	if err := e.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotCloudEvent, err)
	}
	return &e, nil
}

// Header returns the value of the last header named key (case-insensitively), or "".
func Header(msg *kafka.Message, key string) string {
	for i := len(msg.Headers) - 1; i >= 0; i-- {
		if strings.EqualFold(msg.Headers[i].Key, key) {
			return string(msg.Headers[i].Value)
		}
	}
	return ""
}

func mediaType(ct string) string {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return strings.ToLower(strings.TrimSpace(ct))
	}
	return mt
}
