package kafkabinding

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/go-cmp/cmp"
	"github.com/segmentio/kafka-go"
)

// request writes m as the dispatcher does (binary unless structured) and returns the
// request's headers and body.
func request(t *testing.T, m binding.Message, structured bool) (http.Header, []byte) {
	t.Helper()
	ctx := binding.WithForceBinary(context.Background())
	if structured {
		ctx = binding.WithForceStructured(context.Background())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://127.0.0.1/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cehttp.WriteRequest(ctx, m, req); err != nil {
		t.Fatalf("writing the request: %v", err)
	}
	var body []byte
	if req.Body != nil {
		if body, err = io.ReadAll(req.Body); err != nil {
			t.Fatal(err)
		}
	}
	return req.Header, body
}

func hdrs(kv ...string) []kafka.Header {
	var hs []kafka.Header
	for i := 0; i < len(kv); i += 2 {
		hs = append(hs, kafka.Header{Key: kv[i], Value: []byte(kv[i+1])})
	}
	return hs
}

// A binary-mode record goes to HTTP through Binary exactly as through ToEvent and the SDK's
// event message: the same records refused, and for the others the same headers and body, in
// binary and in structured mode. Records in other forms are left to ToEvent (nil, no error).
func TestBinaryWritesWhatTheDecodedEventWould(t *testing.T) {
	base := []string{"ce_specversion", "1.0", "ce_id", "id-1", "ce_source", "/src", "ce_type", "dev.example"}
	with := func(kv ...string) []kafka.Header { return hdrs(append(append([]string{}, base...), kv...)...) }
	sample := sampleEvent(t, event.CloudEventsVersionV1)
	sampleMsg, err := ToMessage(&sample)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		headers []kafka.Header
		value   string
		// other: not a binary 1.0 record, left to ToEvent.
		other bool
	}{
		{name: "every attribute and extensions, as the receiver writes them", headers: sampleMsg.Headers, value: string(sampleMsg.Value)},
		{name: "minimal", headers: with()},
		{name: "json data", headers: with("content-type", "application/json"), value: `{"a":1}`},
		{name: "content-type with parameters", headers: with("content-type", "text/plain; charset=utf-8"), value: "hi"},
		{name: "datacontenttype header overridden by content-type", headers: with("ce_datacontenttype", "text/plain", "content-type", "application/json"), value: "{}"},
		{name: "datacontenttype header alone", headers: with("ce_datacontenttype", "text/plain"), value: "x"},
		{name: "upper-case header names", headers: hdrs("CE_SPECVERSION", "1.0", "Ce_Id", "id-2", "ce_SOURCE", "/s", "ce_type", "t", "Ce_MyExt", "v", "Content-Type", "text/plain"), value: "x"},
		{name: "repeated headers: the last wins", headers: with("ce_id", "id-3", "ce_myext", "a", "ce_myext", "b")},
		{name: "padded values are trimmed", headers: with("ce_type", "  t  ", "ce_subject", "  s ", "ce_id", " i ")},
		{name: "blank subject and dataschema are absent", headers: with("ce_subject", "  ", "ce_dataschema", " ")},
		{name: "time in another zone and precision", headers: with("ce_time", "2026-12-01T05:00:00.5+01:00")},
		{name: "absolute dataschema", headers: with("ce_dataschema", "https://example.com/schema")},
		{name: "source with characters to escape", headers: with("ce_source", "/a b/ü?x=1")},
		{name: "extension with an empty value", headers: with("ce_empty", "")},
		{name: "other headers are ignored", headers: with("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "x-other", "1")},
		{name: "no id", headers: hdrs("ce_specversion", "1.0", "ce_source", "/s", "ce_type", "t")},
		{name: "blank id", headers: with("ce_id", "  ")},
		{name: "no source", headers: hdrs("ce_specversion", "1.0", "ce_id", "i", "ce_type", "t")},
		{name: "empty source", headers: with("ce_source", "")},
		{name: "unparsable source", headers: with("ce_source", "http://[::1")},
		{name: "no type", headers: hdrs("ce_specversion", "1.0", "ce_id", "i", "ce_source", "/s")},
		{name: "blank type", headers: with("ce_type", " ")},
		{name: "bad time", headers: with("ce_time", "yesterday")},
		{name: "empty time", headers: with("ce_time", "")},
		{name: "relative dataschema", headers: with("ce_dataschema", "/schema")},
		{name: "bad content-type", headers: with("content-type", "not a media type;;"), value: "x"},
		{name: "bad extension name", headers: with("ce_my-ext", "v")},
		{name: "empty extension name", headers: with("ce_", "v")},
		{name: "spec version 0.3", headers: hdrs("ce_specversion", "0.3", "ce_id", "i", "ce_source", "/s", "ce_type", "t"), other: true},
		{name: "unknown spec version", headers: hdrs("ce_specversion", "2.0", "ce_id", "i", "ce_source", "/s", "ce_type", "t"), other: true},
		{name: "no spec version", headers: hdrs("content-type", "application/json"), value: "{}", other: true},
		{name: "structured", headers: hdrs("content-type", "application/cloudevents+json"), value: `{"specversion":"1.0","id":"i","source":"/s","type":"t"}`, other: true},
		{name: "structured batch", headers: hdrs("content-type", "application/cloudevents-batch+json"), value: `[]`, other: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg := &kafka.Message{Headers: tc.headers, Value: []byte(tc.value)}
			b, berr := NewBinary(msg)
			ev, everr := ToEvent(msg)
			if tc.other {
				if b != nil || berr != nil {
					t.Fatalf("NewBinary = %v, %v; want nil, nil for a record ToEvent decodes (or refuses) itself", b, berr)
				}
				return
			}
			if (berr == nil) != (everr == nil) {
				t.Fatalf("NewBinary error %v, ToEvent error %v: they must refuse the same records", berr, everr)
			}
			if berr != nil {
				if !errors.Is(berr, ErrNotCloudEvent) {
					t.Errorf("error %v does not wrap ErrNotCloudEvent", berr)
				}
				return
			}
			if b.ID() != ev.ID() || b.Type() != ev.Type() {
				t.Errorf("id, type = %q, %q; want %q, %q", b.ID(), b.Type(), ev.ID(), ev.Type())
			}
			for _, structured := range []bool{false, true} {
				wantH, wantB := request(t, binding.ToMessage(ev), structured)
				gotH, gotB := request(t, b, structured)
				if structured {
					// The JSON's member order follows the extension map; compare the events.
					want, got := event.New(), event.New()
					if err := want.UnmarshalJSON(wantB); err != nil {
						t.Fatal(err)
					}
					if err := got.UnmarshalJSON(gotB); err != nil {
						t.Fatalf("structured body %s: %v", gotB, err)
					}
					wantB, gotB = []byte(want.String()), []byte(got.String())
				}
				if d := cmp.Diff(wantH, gotH); d != "" {
					t.Errorf("structured=%v: headers differ (-event +binary):\n%s", structured, d)
				}
				if d := cmp.Diff(string(wantB), string(gotB)); d != "" {
					t.Errorf("structured=%v: body differs (-event +binary):\n%s", structured, d)
				}
			}
		})
	}
}
