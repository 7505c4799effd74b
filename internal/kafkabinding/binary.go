package kafkabinding

import (
	"bytes"
	"context"
	"fmt"
	"mime"
	"net/url"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/segmentio/kafka-go"
)

// Binary is a binary-mode CloudEvents 1.0 record as a binding.Message: written to HTTP it
// becomes Ce- headers, Content-Type and the record's value as the body, without an
// event.Event in between (ToEvent clones the SDK's context prototype and its extension map
// for every record, and writing that event converts every attribute back). Structured
// writers (a subscriber's delivery format json) still get an event, which the SDK builds
// from ReadBinary. Its checks are ToEvent's, so a record ToEvent refuses is refused here too.
type Binary struct {
	msg *kafka.Message
	// The attributes, as ToEvent would have set them (trimmed, parsed); extensions and the
	// data stay in msg and are read from there.
	id, typ, subject, contentType string
	source, dataSchema            string
	time                          time.Time
}

var (
	v1          = versions.Version(event.CloudEventsVersionV1)
	attrID      = v1.AttributeFromKind(spec.ID)
	attrSource  = v1.AttributeFromKind(spec.Source)
	attrSpec    = v1.AttributeFromKind(spec.SpecVersion)
	attrType    = v1.AttributeFromKind(spec.Type)
	attrSubject = v1.AttributeFromKind(spec.Subject)
	attrTime    = v1.AttributeFromKind(spec.Time)
	attrSchema  = v1.AttributeFromKind(spec.DataSchema)
	attrCT      = v1.AttributeFromKind(spec.DataContentType)
)

var (
	_ binding.Message               = (*Binary)(nil)
	_ binding.MessageMetadataReader = (*Binary)(nil)
)

// NewBinary reads msg as a binary-mode CloudEvents 1.0 record. It returns nil and no error
// for a record in another form (structured mode, another specversion, no specversion), which
// the caller decodes with ToEvent, and an error wrapping ErrNotCloudEvent for a binary 1.0
// record that ToEvent would refuse. The record must stay unchanged while the Binary is used.
func NewBinary(msg *kafka.Message) (*Binary, error) {
	ct := Header(msg, HeaderContentType)
	if ct != "" && (format.Lookup(ct) != nil || mediaType(ct) == event.ApplicationCloudEventsBatchJSON) {
		return nil, nil
	}
	if Header(msg, attrSpec.PrefixedName()) != event.CloudEventsVersionV1 {
		return nil, nil
	}
	b := &Binary{msg: msg}
	var source string
	var hasSource bool
	for _, h := range msg.Headers {
		name := lower(h.Key)
		if len(name) < len(prefix) || name[:len(prefix)] != prefix {
			continue
		}
		v := string(h.Value)
		switch name[len(prefix):] {
		case "specversion":
		case "id":
			if b.id = strings.TrimSpace(v); b.id == "" {
				return nil, fmt.Errorf("%w: attribute id: it is required to be a non-empty string", ErrNotCloudEvent)
			}
		case "source":
			source, hasSource = v, true
		case "type":
			b.typ = strings.TrimSpace(v)
		case "subject":
			b.subject = strings.TrimSpace(v)
		case "time":
			t, err := types.ParseTime(v)
			if err != nil {
				return nil, fmt.Errorf("%w: attribute time: %v", ErrNotCloudEvent, err)
			}
			b.time = t
		case "dataschema":
			b.dataSchema = ""
			if s := strings.TrimSpace(v); s != "" {
				u, err := url.Parse(s)
				if err != nil {
					return nil, fmt.Errorf("%w: attribute dataschema: %v", ErrNotCloudEvent, err)
				}
				// event.Validate's rule for 1.0: an absolute URI.
				if !u.IsAbs() {
					return nil, fmt.Errorf("%w: dataschema: if present, MUST adhere to the format specified in RFC 3986, Section 4.3. Absolute URI", ErrNotCloudEvent)
				}
				b.dataSchema = u.String()
			}
		case "datacontenttype":
			b.contentType = strings.TrimSpace(v)
		default:
			if err := extensionName(name[len(prefix):]); err != nil {
				return nil, fmt.Errorf("%w: extension %s: %v", ErrNotCloudEvent, name, err)
			}
		}
	}
	if ct != "" {
		b.contentType = strings.TrimSpace(ct)
	}
	if hasSource {
		u, err := url.Parse(source)
		if err != nil {
			return nil, fmt.Errorf("%w: attribute source: %v", ErrNotCloudEvent, err)
		}
		b.source = u.String()
	}
	// event.Validate's rules for 1.0.
	var missing []string
	if b.id == "" {
		missing = append(missing, "id: MUST be a non-empty string")
	}
	if strings.TrimSpace(b.source) == "" {
		missing = append(missing, "source: REQUIRED")
	}
	if b.typ == "" {
		missing = append(missing, "type: MUST be a non-empty string")
	}
	if b.contentType != "" {
		if _, _, err := mime.ParseMediaType(b.contentType); err != nil {
			missing = append(missing, "datacontenttype: "+err.Error())
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotCloudEvent, strings.Join(missing, "; "))
	}
	return b, nil
}

// ID is the event's id.
func (b *Binary) ID() string { return b.id }

// Type is the event's type.
func (b *Binary) Type() string { return b.typ }

// ReadEncoding implements binding.Message.
func (b *Binary) ReadEncoding() binding.Encoding { return binding.EncodingBinary }

// ReadStructured implements binding.Message: a Binary is never structured.
func (b *Binary) ReadStructured(context.Context, binding.StructuredWriter) error {
	return binding.ErrNotStructured
}

// ReadBinary implements binding.Message: the attributes as ToEvent's event would give them,
// the extensions and the data straight from the record.
func (b *Binary) ReadBinary(_ context.Context, w binding.BinaryWriter) error {
	set := func(a spec.Attribute, v any) error {
		if err := w.SetAttribute(a, v); err != nil {
			return fmt.Errorf("writing attribute %s: %w", a.Name(), err)
		}
		return nil
	}
	if err := set(attrSpec, event.CloudEventsVersionV1); err != nil {
		return err
	}
	if err := set(attrID, b.id); err != nil {
		return err
	}
	if err := set(attrSource, b.source); err != nil {
		return err
	}
	if err := set(attrType, b.typ); err != nil {
		return err
	}
	if b.subject != "" {
		if err := set(attrSubject, b.subject); err != nil {
			return err
		}
	}
	if !b.time.IsZero() {
		if err := set(attrTime, b.time); err != nil {
			return err
		}
	}
	if b.dataSchema != "" {
		if err := set(attrSchema, b.dataSchema); err != nil {
			return err
		}
	}
	if b.contentType != "" {
		if err := set(attrCT, b.contentType); err != nil {
			return err
		}
	}
	// Extensions in header order, the last of a name winning, as ToEvent sets them.
	for i, h := range b.msg.Headers {
		name := lower(h.Key)
		if len(name) <= len(prefix) || name[:len(prefix)] != prefix || v1.Attribute(name) != nil || laterHeader(b.msg.Headers[i+1:], name) {
			continue
		}
		if err := w.SetExtension(name[len(prefix):], string(h.Value)); err != nil {
			return fmt.Errorf("writing extension %s: %w", name, err)
		}
	}
	if len(b.msg.Value) > 0 {
		return w.SetData(bytes.NewReader(b.msg.Value))
	}
	return nil
}

// GetAttribute implements binding.MessageMetadataReader (the SDK's transformers read it).
func (b *Binary) GetAttribute(k spec.Kind) (spec.Attribute, any) {
	a := v1.AttributeFromKind(k)
	switch k {
	case spec.SpecVersion:
		return a, event.CloudEventsVersionV1
	case spec.ID:
		return a, b.id
	case spec.Source:
		return a, b.source
	case spec.Type:
		return a, b.typ
	case spec.Subject:
		if b.subject != "" {
			return a, b.subject
		}
	case spec.Time:
		if !b.time.IsZero() {
			return a, b.time
		}
	case spec.DataSchema:
		if b.dataSchema != "" {
			return a, b.dataSchema
		}
	case spec.DataContentType:
		if b.contentType != "" {
			return a, b.contentType
		}
	}
	return a, nil
}

// GetExtension implements binding.MessageMetadataReader.
func (b *Binary) GetExtension(name string) any {
	name = prefix + strings.ToLower(name)
	if v1.Attribute(name) != nil {
		return nil
	}
	for i := len(b.msg.Headers) - 1; i >= 0; i-- {
		if strings.EqualFold(b.msg.Headers[i].Key, name) {
			return string(b.msg.Headers[i].Value)
		}
	}
	return nil
}

// Finish implements binding.Message; the record is not the Binary's to release.
func (b *Binary) Finish(error) error { return nil }

// laterHeader reports whether hs has another header named name (lower case).
func laterHeader(hs []kafka.Header, name string) bool {
	for _, h := range hs {
		if len(h.Key) == len(name) && strings.EqualFold(h.Key, name) {
			return true
		}
	}
	return false
}

// lower is strings.ToLower without the allocation for names already in lower case, as the
// receiver writes them.
func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// extensionName is the SDK's rule for extension names (ASCII letters and digits).
func extensionName(name string) error {
	if name == "" {
		return fmt.Errorf("CloudEvents attribute names MUST NOT be empty")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return fmt.Errorf("CloudEvents attribute names MUST consist of lower-case letters ('a' to 'z') or digits ('0' to '9'), not %q", name)
		}
	}
	return nil
}
