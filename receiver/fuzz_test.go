package receiver

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/google/go-cmp/cmp"

	"github.com/kafkachannel/kafkachannel/internal/kafkabinding"
)

// FuzzDecodeEvent throws arbitrary headers and bodies at the request parsing. Whatever comes in,
// the receiver must not panic; what it accepts must be a valid event of the version sent, and
// must survive the trip into a Kafka record and back unchanged (the dispatcher reads it so).
//
//	go test ./receiver -run '^$' -fuzz FuzzDecodeEvent -fuzztime 30s
func FuzzDecodeEvent(f *testing.F) {
	type seed struct {
		ct, specversion, id, source, typ, ext, timeAttr string
		body                                            []byte
	}
	seeds := []seed{
		{ct: "text/plain", specversion: "1.0", id: "1", source: "/s", typ: "t", body: []byte("hello")},
		{ct: "application/octet-stream", specversion: "0.3", id: "é", source: "urn:x", typ: "t", ext: "wert ü", body: []byte{0, 1, 0xff, 0xfe}},
		{ct: "", specversion: "1.0", id: "1", source: "/s", typ: "t", timeAttr: "2026-01-02T03:04:05.123Z"},
		{ct: "application/json", specversion: "1.0", id: "x", source: "/", typ: "t", body: []byte(`{"a":"東京"}`)},
		{ct: "application/cloudevents+json", body: []byte(`{"specversion":"1.0","id":"2","source":"/s","type":"t","data":{"a":1},"myext":"v"}`)},
		{ct: "application/cloudevents+json; charset=utf-8", body: []byte(`{"specversion":"0.3","id":"2","source":"/s","type":"t","datacontenttype":"text/plain","data":"ünï"}`)},
		{ct: "application/cloudevents+json", body: []byte(`{"specversion":"1.0","id":"3","source":"/s","type":"t","data_base64":"AAEC/w=="}`)},
		{ct: "application/cloudevents+json", body: []byte(`{"specversion":"1.0","id":"4","source":"/s","type":"t","count":42,"flag":true}`)},
		{ct: "application/cloudevents-batch+json", body: []byte(`[{"specversion":"1.0","id":"2","source":"/s","type":"t"}]`)},
		{ct: "application/cloudevents+json", body: []byte(`{"specversion":`)},
		{ct: "text/plain", specversion: "2.0", id: "1", source: "/s", typ: "t"},
		{ct: "text/plain", specversion: "1.0", id: "1", source: "/s", typ: "t", timeAttr: "yesterday"},
	}
	for _, s := range seeds {
		f.Add(s.ct, s.specversion, s.id, s.source, s.typ, s.ext, s.timeAttr, s.body)
	}
	f.Fuzz(func(t *testing.T, ct, specversion, id, source, typ, ext, timeAttr string, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "http://receiver/ns/ch", bytes.NewReader(body))
		set := func(k, v string) {
			if v != "" {
				req.Header.Set(k, v)
			}
		}
		set("Content-Type", ct)
		set("Ce-Specversion", specversion)
		set("Ce-Id", id)
		set("Ce-Source", source)
		set("Ce-Type", typ)
		set("Ce-Myext", ext)
		set("Ce-Time", timeAttr)

		e, rej := decodeEvent(context.Background(), req, body)
		if rej != nil {
			if rej.code != http.StatusBadRequest && rej.code != http.StatusUnsupportedMediaType {
				t.Fatalf("rejected with %d: %s", rej.code, rej.reason)
			}
			if rej.reason == "" {
				t.Fatal("rejected without a reason")
			}
			return
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("accepted an invalid event: %v", err)
		}
		if format.Lookup(ct) == nil && e.SpecVersion() != req.Header.Get("Ce-Specversion") {
			t.Fatalf("binary mode: spec version %q became %q", req.Header.Get("Ce-Specversion"), e.SpecVersion())
		}
		msg, err := kafkabinding.ToMessage(e)
		if err != nil {
			// An accepted event the receiver cannot write is answered 400 by produce; it must
			// be an event the binding refuses, never a crash.
			return
		}
		back, err := kafkabinding.ToEvent(&msg)
		if err != nil {
			t.Fatalf("the record of an accepted event does not decode: %v", err)
		}
		if diff := cmp.Diff(view(e), view(back)); diff != "" {
			t.Fatalf("event changed through the record (-accepted +decoded):\n%s", diff)
		}
		if back.SpecVersion() != e.SpecVersion() {
			t.Fatalf("version %s became %s", e.SpecVersion(), back.SpecVersion())
		}
	})
}
