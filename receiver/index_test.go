package receiver

import (
	"net/http/httptest"
	"testing"

	"github.com/kafkachannel/kafkachannel/internal/naming"
)

func TestRouting(t *testing.T) {
	idx := NewIndex()
	idx.SetChannel(Channel{Namespace: "ns", Name: "orders", Topic: "ns.orders", Ready: true})
	// A name that cannot be a Service name as is gets a hashed Service name.
	idx.SetChannel(Channel{Namespace: "ns", Name: "v1.orders", Topic: "ns.v1.orders", Ready: true})
	long := "a-very-long-channel-name-that-does-not-fit-into-a-dns-label-with-its-suffix"
	idx.SetChannel(Channel{Namespace: "ns", Name: long, Topic: "ns." + long, Ready: true})

	tests := []struct {
		host, path string
		want       string // "" for not found
	}{
		{naming.ChannelHost("ns", "orders"), "/", "ns/orders"},
		{"orders-kn-channel.ns.svc.cluster.local.", "/", "ns/orders"},
		{"orders-kn-channel.ns.svc", "/", "ns/orders"},
		{"orders-kn-channel.ns", "/", "ns/orders"},
		{"orders-kn-channel.ns:8080", "/", "ns/orders"},
		{"Orders-KN-Channel.NS.svc.cluster.local:80", "/", "ns/orders"},
		{naming.ChannelHost("ns", "v1.orders"), "/", "ns/v1.orders"},
		{naming.ChannelHost("ns", long), "/anything", "ns/" + long},
		{"orders-kn-channel.other.svc.cluster.local", "/", ""},
		{"orders.ns.svc.cluster.local", "/", ""},
		{"localhost:8080", "/ns/orders", "ns/orders"},
		{"localhost:8080", "/ns/orders/", "ns/orders"},
		{"localhost:8080", "/ns/v1.orders", "ns/v1.orders"},
		{"localhost:8080", "/ns/nope", ""},
		{"localhost:8080", "/ns", ""},
		{"localhost:8080", "/", ""},
		// Three segments are not the path form; the Host decides.
		{naming.ChannelHost("ns", "orders"), "/a/b/c", "ns/orders"},
		// The path form is explicit and wins over the Host.
		{naming.ChannelHost("ns", "orders"), "/ns/nope", ""},
		{"", "/", ""},
		{"[::1]:8080", "/", ""},
	}
	for _, tc := range tests {
		req := httptest.NewRequest("POST", "http://x"+tc.path, nil)
		req.Host = tc.host
		ch, rej := route(idx, req)
		got := ""
		if rej == nil {
			got = ch.Key()
		} else if rej.code != 404 {
			t.Errorf("%s %s: code %d, want 404", tc.host, tc.path, rej.code)
		}
		if got != tc.want {
			t.Errorf("host %q path %q: routed to %q, want %q", tc.host, tc.path, got, tc.want)
		}
	}

	idx.Delete("ns", "orders")
	if _, ok := idx.ByHost(naming.ChannelHost("ns", "orders")); ok {
		t.Error("a deleted channel is still found by host")
	}
	if _, ok := idx.ByName("ns", "orders"); ok {
		t.Error("a deleted channel is still found by name")
	}
}
