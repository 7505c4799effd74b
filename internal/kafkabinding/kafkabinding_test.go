package kafkabinding

import (
	"errors"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/go-cmp/cmp"
	"github.com/segmentio/kafka-go"
)

func sampleEvent(t *testing.T, version string) event.Event {
	t.Helper()
	e := event.New(version)
	e.SetID("id-1")
	e.SetType("dev.example.type")
	e.SetSource("/source/ü")
	e.SetSubject("subject")
	e.SetTime(time.Date(2026, 11, 26, 12, 0, 0, 123000000, time.UTC))
	e.SetExtension("partitionkey", "key-7")
	e.SetExtension("myext", "välue")
	e.SetDataContentType("application/octet-stream")
	e.DataEncoded = []byte{0, 1, 2, 0xff, 0xfe}
	return e
}

func TestRoundTrip(t *testing.T) {
	for _, version := range []string{event.CloudEventsVersionV1, event.CloudEventsVersionV03} {
		t.Run(version, func(t *testing.T) {
			in := sampleEvent(t, version)
			msg, err := ToMessage(&in)
			if err != nil {
				t.Fatal(err)
			}
			if string(msg.Key) != "key-7" {
				t.Errorf("key = %q, want the partitionkey extension", msg.Key)
			}
			if got := Header(&msg, "ce_specversion"); got != version {
				t.Errorf("ce_specversion = %q, want %q (the version is never upgraded)", got, version)
			}
			out, err := ToEvent(&msg)
			if err != nil {
				t.Fatal(err)
			}
			// DataBase64 only says how structured JSON would spell the data; compare the event.
			out.DataBase64 = in.DataBase64
			if diff := cmp.Diff(in.String(), out.String()); diff != "" {
				t.Errorf("event changed on the way (-in +out):\n%s", diff)
			}
			if !cmp.Equal(in.Data(), out.Data()) {
				t.Errorf("data = %v, want %v", out.Data(), in.Data())
			}
		})
	}
}

func TestStructured(t *testing.T) {
	in := sampleEvent(t, event.CloudEventsVersionV1)
	body, err := in.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	msg := kafka.Message{Value: body, Headers: []kafka.Header{{Key: "content-type", Value: []byte("application/cloudevents+json; charset=utf-8")}}}
	out, err := ToEvent(&msg)
	if err != nil {
		t.Fatal(err)
	}
	if out.ID() != "id-1" || !cmp.Equal(out.Data(), in.Data()) {
		t.Errorf("structured decode = %v", out)
	}
}

func TestNotCloudEvents(t *testing.T) {
	tests := []struct {
		name string
		msg  kafka.Message
	}{
		{"plain bytes", kafka.Message{Value: []byte("hello")}},
		{"json without headers", kafka.Message{Value: []byte(`{"a":1}`), Headers: []kafka.Header{{Key: "content-type", Value: []byte("application/json")}}}},
		{"broken structured", kafka.Message{Value: []byte(`{"id":`), Headers: []kafka.Header{{Key: "content-type", Value: []byte("application/cloudevents+json")}}}},
		{"structured without id", kafka.Message{Value: []byte(`{"specversion":"1.0","type":"t","source":"s"}`), Headers: []kafka.Header{{Key: "content-type", Value: []byte("application/cloudevents+json")}}}},
		{"unknown specversion", kafka.Message{Headers: []kafka.Header{{Key: "ce_specversion", Value: []byte("9.9")}}}},
		{"binary missing type", kafka.Message{Headers: []kafka.Header{{Key: "ce_specversion", Value: []byte("1.0")}, {Key: "ce_id", Value: []byte("1")}, {Key: "ce_source", Value: []byte("/s")}}}},
		{"batch", kafka.Message{Value: []byte(`[]`), Headers: []kafka.Header{{Key: "content-type", Value: []byte("application/cloudevents-batch+json")}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ToEvent(&tt.msg); !errors.Is(err, ErrNotCloudEvent) {
				t.Errorf("ToEvent = %v, want ErrNotCloudEvent", err)
			}
		})
	}
}

func FuzzToEvent(f *testing.F) {
	f.Add([]byte("hello"), "application/cloudevents+json", "")
	f.Add([]byte(`{"specversion":"1.0","id":"1","type":"t","source":"s","data":{"a":1}}`), "application/cloudevents+json", "")
	f.Add([]byte{0, 1}, "application/octet-stream", "1.0")
	f.Fuzz(func(t *testing.T, value []byte, contentType, specversion string) {
		msg := kafka.Message{Value: value, Headers: []kafka.Header{
			{Key: "content-type", Value: []byte(contentType)},
			{Key: "ce_specversion", Value: []byte(specversion)},
			{Key: "ce_id", Value: []byte("1")}, {Key: "ce_type", Value: []byte("t")}, {Key: "ce_source", Value: []byte("/s")},
		}}
		e, err := ToEvent(&msg)
		if err != nil {
			if !errors.Is(err, ErrNotCloudEvent) {
				t.Fatalf("error %v does not wrap ErrNotCloudEvent", err)
			}
			return
		}
		// Whatever decodes must encode again and decode to the same event.
		again, err := ToMessage(e)
		if err != nil {
			t.Fatalf("decoded event does not encode: %v", err)
		}
		e2, err := ToEvent(&again)
		if err != nil || e2.ID() != e.ID() {
			t.Fatalf("re-decode: %v", err)
		}
	})
}
