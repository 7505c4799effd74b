package naming

import (
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	long := strings.Repeat("x", 200)
	tests := []struct {
		ns, name string
	}{
		{"default", "my-channel"},
		{"a-b", "c"},
		{"a", "b-c"},
		{"0ns", "chan.with.dots"},
		{long[:63], long},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		for _, n := range []string{DispatcherName(tt.ns, tt.name), ChannelServiceName(tt.name)} {
			if len(n) > 63 || !dns1035.MatchString(n) {
				t.Errorf("%q for %s/%s is not a DNS-1035 label of at most 63 characters", n, tt.ns, tt.name)
			}
		}
		d := DispatcherName(tt.ns, tt.name)
		if prev, ok := seen[d]; ok {
			t.Errorf("DispatcherName collision: %s/%s and %s give %q", tt.ns, tt.name, prev, d)
		}
		seen[d] = tt.ns + "/" + tt.name
		if DispatcherName(tt.ns, tt.name) != d {
			t.Errorf("DispatcherName is not deterministic")
		}
		if v := ChannelLabels(tt.ns, tt.name, ComponentDispatch)[LabelChannelName]; len(v) > 63 {
			t.Errorf("label value %q too long", v)
		}
	}
}

func TestWellKnownNames(t *testing.T) {
	tests := []struct{ got, want string }{
		{Topic("ns", "ch"), "ns.ch"},
		{GroupID("ns", "ch", "1234"), "kafka.ns.ch.1234"},
		{ChannelServiceName("ch"), "ch-kn-channel"},
		{ChannelURL("ns", "ch"), "http://ch-kn-channel.ns.svc.cluster.local"},
		{ChannelPath("ns", "ch"), "/ns/ch"},
		{ReceiverHost("knative-eventing"), "kafkachannel-receiver.knative-eventing.svc.cluster.local"},
		{ChannelHTTPSURL("knative-eventing", "ns", "ch"), "https://kafkachannel-receiver.knative-eventing.svc.cluster.local/ns/ch"},
		{ChannelAudience("ns", "ch"), "messaging.knative.dev/kafkachannel/ns/ch"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}
