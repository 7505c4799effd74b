package kafkabinding

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/segmentio/kafka-go"
)

// benchRecord is a binary-mode record like those of make bench (256-byte JSON data).
func benchRecord() *kafka.Message {
	return &kafka.Message{
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

// BenchmarkToEvent is the dispatcher's per-record decode: the CPU a delivery spends that a
// loop copying headers into a request (P1's POST baseline) does not (docs/benchmarks.md, P1).
func BenchmarkToEvent(b *testing.B) {
	msg := benchRecord()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ToEvent(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeRequest is the dispatcher's per-delivery encode of the decoded event into a
// binary-mode HTTP request, as dispatcher.attempt does it.
func BenchmarkEncodeRequest(b *testing.B) {
	ev, err := ToEvent(benchRecord())
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

// BenchmarkRawHeaderCopy is what P1's POST baseline does per record instead of both.
func BenchmarkRawHeaderCopy(b *testing.B) {
	msg := benchRecord()
	b.ReportAllocs()
	// b.N, not b.Loop: go1.26.8's compiler crashes (internal compiler error in iter.go) on
	// this loop body inside b.Loop.
	for range b.N {
		req, err := http.NewRequest(http.MethodPost, "http://127.0.0.1:8080/", strings.NewReader(string(msg.Value)))
		if err != nil {
			b.Fatal(err)
		}
		for _, h := range msg.Headers {
			switch {
			case h.Key == "content-type":
				req.Header.Set("Content-Type", string(h.Value))
			case strings.HasPrefix(h.Key, "ce_"):
				req.Header.Set("Ce-"+strings.TrimPrefix(h.Key, "ce_"), string(h.Value))
			}
		}
	}
}
