package eventpolicy

import (
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/kafkachannel/kafkachannel/internal/features"
)

func policy(t *testing.T, doc string) *Policy {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatal(err)
	}
	p, err := FromUnstructured(u)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func event(typ, source string) *cloudevents.Event {
	e := cloudevents.New()
	e.SetID("1")
	e.SetType(typ)
	e.SetSource(source)
	e.SetExtension("tenant", "blue")
	return &e
}

const (
	producer = "system:serviceaccount:shop:producer"
	stranger = "system:serviceaccount:other:intruder"
)

func TestAppliesTo(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		want bool
	}{
		{"no spec.to: the whole namespace", `{metadata: {namespace: shop, name: p}, spec: {}}`, true},
		{"another namespace", `{metadata: {namespace: other, name: p}, spec: {}}`, false},
		{"ref to the channel", `{metadata: {namespace: shop, name: p}, spec: {to: [{ref: {apiVersion: messaging.knative.dev/v1beta1, kind: KafkaChannel, name: orders}}]}}`, true},
		{"ref to another channel", `{metadata: {namespace: shop, name: p}, spec: {to: [{ref: {apiVersion: messaging.knative.dev/v1beta1, kind: KafkaChannel, name: invoices}}]}}`, false},
		{"ref to a Broker of that name", `{metadata: {namespace: shop, name: p}, spec: {to: [{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: orders}}]}}`, false},
		{"selector matching labels", `{metadata: {namespace: shop, name: p}, spec: {to: [{selector: {apiVersion: messaging.knative.dev/v1beta1, kind: KafkaChannel, matchLabels: {team: shop}}}]}}`, true},
		{"selector not matching", `{metadata: {namespace: shop, name: p}, spec: {to: [{selector: {apiVersion: messaging.knative.dev/v1beta1, kind: KafkaChannel, matchLabels: {team: ops}}}]}}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := policy(t, tc.doc).AppliesTo("shop", "orders", map[string]string{"team": "shop"}); got != tc.want {
				t.Errorf("AppliesTo = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	fromProducer := `{metadata: {namespace: shop, name: producers}, spec: {from: [{sub: "system:serviceaccount:shop:producer"}]}}`
	wildcard := `{metadata: {namespace: shop, name: all-of-ops}, spec: {from: [{sub: "system:serviceaccount:ops:*"}]}}`
	resolved := `{metadata: {namespace: shop, name: resolved}, spec: {from: [{ref: {kind: PingSource, name: x}}]}, status: {from: ["system:serviceaccount:shop:pinger"]}}`
	filtered := `{metadata: {namespace: shop, name: orders-only}, spec: {from: [{sub: "system:serviceaccount:shop:producer"}], filters: [{prefix: {type: order.}}, {any: [{exact: {tenant: blue}}, {exact: {tenant: green}}]}]}}`
	cesql := `{metadata: {namespace: shop, name: sql}, spec: {from: [{sub: "system:serviceaccount:shop:producer"}], filters: [{cesql: "type = 'x'"}]}}`
	for _, tc := range []struct {
		name     string
		policies []string
		mode     features.Authorization
		subject  string
		senderNS string
		event    *cloudevents.Event
		want     bool
	}{
		{"no policy, allow-same-namespace, same namespace", nil, features.AllowSameNamespace, producer, "shop", event("t", "s"), true},
		{"no policy, allow-same-namespace, other namespace", nil, features.AllowSameNamespace, stranger, "other", event("t", "s"), false},
		{"no policy, allow-all", nil, features.AllowAll, stranger, "other", event("t", "s"), true},
		{"no policy, deny-all", nil, features.DenyAll, producer, "shop", event("t", "s"), false},
		{"policy names the sender", []string{fromProducer}, features.DenyAll, producer, "shop", event("t", "s"), true},
		{"policy does not name the sender, same namespace", []string{fromProducer}, features.AllowAll, "system:serviceaccount:shop:other", "shop", event("t", "s"), false},
		{"wildcard subject", []string{fromProducer, wildcard}, features.DenyAll, "system:serviceaccount:ops:robot", "ops", event("t", "s"), true},
		{"wildcard does not reach other namespaces", []string{wildcard}, features.AllowAll, "system:serviceaccount:opsx:robot", "opsx", event("t", "s"), false},
		{"subjects resolved into status", []string{resolved}, features.DenyAll, "system:serviceaccount:shop:pinger", "shop", event("t", "s"), true},
		{"filters match", []string{filtered}, features.DenyAll, producer, "shop", event("order.created", "s"), true},
		{"filters refuse the type", []string{filtered}, features.DenyAll, producer, "shop", event("invoice.created", "s"), false},
		{"cesql is never matched", []string{cesql}, features.AllowAll, producer, "shop", event("x", "s"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ps []*Policy
			for _, d := range tc.policies {
				ps = append(ps, policy(t, d))
			}
			d := Decide(ps, tc.mode, "shop", tc.subject, tc.senderNS, tc.event)
			if d.Allowed != tc.want || d.Reason == "" {
				t.Errorf("Decide = %+v, want allowed=%v with a reason", d, tc.want)
			}
		})
	}
}
