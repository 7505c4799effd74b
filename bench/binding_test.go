package bench

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/segmentio/kafka-go"

	"github.com/kafkachannel/kafkachannel/internal/kafkabinding"
)

// The per-record CPU of P1 without Kafka, HTTP or contention: what the dispatcher does to a
// record (decode, then encode a request) against what the POST baseline does (binaryRequest).
// docs/benchmarks.md quotes them under P1.

// benchRecord is a binary-mode record like those of P1 (256-byte JSON data).
func benchRecord() kafka.Message {
	return kafka.Message{
		Value: []byte(`{"data":"` + strings.Repeat("x", 244) + `"}`),
		Headers: []kafka.Header{
			{Key: "ce_specversion", Value: []byte("1.0")},
			{Key: "ce_id", Value: []byte("bench-000001")},
			{Key: "ce_source", Value: []byte("/bench")},
			{Key: "ce_type", Value: []byte("dev.bench.event")},
			{Key: "ce_time", Value: []byte("2026-12-01T04:00:00Z")},
			{Key: "content-type", Value: []byte("application/json")},
		},
	}
}

// BenchmarkToEvent is the dispatcher's per-record decode.
func BenchmarkToEvent(b *testing.B) {
	msg := benchRecord()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := kafkabinding.ToEvent(&msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeRequest is the dispatcher's per-delivery encode of the decoded event into a
// binary-mode request, as dispatcher.attempt does it.
func BenchmarkEncodeRequest(b *testing.B) {
	msg := benchRecord()
	ev, err := kafkabinding.ToEvent(&msg)
	if err != nil {
		b.Fatal(err)
	}
	ctx := binding.WithForceBinary(context.Background())
	b.ReportAllocs()
	for b.Loop() {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://127.0.0.1:8080/", nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := cehttp.WriteRequest(ctx, binding.ToMessage(ev), req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawHeaderCopy is what the POST baseline does per record instead of both.
func BenchmarkRawHeaderCopy(b *testing.B) {
	msg := benchRecord()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := binaryRequest("http://127.0.0.1:8080/", msg); err != nil {
			b.Fatal(err)
		}
	}
}

// newRequest is the request attempt starts from.
func newRequest(b *testing.B, ctx context.Context) *http.Request {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://127.0.0.1:8080/", nil)
	if err != nil {
		b.Fatal(err)
	}
	return req
}

// BenchmarkRecordToRequestViaEvent is the per-record path before zero-copy dispatch: decode
// the record into an event.Event, then encode that event into a binary-mode request.
func BenchmarkRecordToRequestViaEvent(b *testing.B) {
	msg := benchRecord()
	ctx := binding.WithForceBinary(context.Background())
	b.ReportAllocs()
	for b.Loop() {
		ev, err := kafkabinding.ToEvent(&msg)
		if err != nil {
			b.Fatal(err)
		}
		if err := cehttp.WriteRequest(ctx, binding.ToMessage(ev), newRequest(b, ctx)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRecordToRequestZeroCopy is the dispatcher's per-record path now: the record checked
// and written to the request as a binding message (kafkabinding.Binary), no event.Event.
func BenchmarkRecordToRequestZeroCopy(b *testing.B) {
	msg := benchRecord()
	ctx := binding.WithForceBinary(context.Background())
	b.ReportAllocs()
	for b.Loop() {
		rec, err := kafkabinding.NewBinary(&msg)
		if err != nil || rec == nil {
			b.Fatal(rec, err)
		}
		if err := cehttp.WriteRequest(ctx, rec, newRequest(b, ctx)); err != nil {
			b.Fatal(err)
		}
	}
}
