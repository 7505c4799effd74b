package eventpolicy

import (
	"strings"
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

// TestCESQLAdmitsNothing: CESQL is not evaluated, so a policy that uses it anywhere, however
// deeply nested or negated, must admit no event at all: `not` over an unevaluated expression
// once flipped "never matches" into "always matches".
func TestCESQLAdmitsNothing(t *testing.T) {
	const head = `{metadata: {namespace: shop, name: sql}, spec: {from: [{sub: "system:serviceaccount:shop:producer"}], filters: `
	for _, tc := range []struct {
		name    string
		filters string
		event   *cloudevents.Event
	}{
		{"not(type = 'admin') and an admin event", `[{not: {cesql: "type = 'admin'"}}]`, event("admin", "s")},
		{"not(type = 'admin') and another event", `[{not: {cesql: "type = 'admin'"}}]`, event("order.created", "s")},
		{"not not", `[{not: {not: {cesql: "type = 'admin'"}}}]`, event("admin", "s")},
		{"inside any", `[{any: [{exact: {type: nothing}}, {not: {cesql: "type = 'admin'"}}]}]`, event("admin", "s")},
		{"inside all, next to a matching filter", `[{all: [{prefix: {type: ad}}, {not: {cesql: "type = 'x'"}}]}]`, event("admin", "s")},
		{"next to exact in the same filter", `[{exact: {type: admin}, not: {cesql: "type = 'x'"}}]`, event("admin", "s")},
		{"top level", `[{cesql: "type = 'admin'"}]`, event("admin", "s")},
		{"second filter", `[{prefix: {type: ad}}, {not: {cesql: "source = 'x'"}}]`, event("admin", "s")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := policy(t, head+tc.filters+`}}`)
			d := Decide([]*Policy{p}, features.AllowAll, "shop", producer, "shop", tc.event)
			if d.Allowed {
				t.Fatalf("Decide = %+v: a policy with CESQL admitted an event", d)
			}
			if !strings.Contains(d.Reason, "CESQL") {
				t.Errorf("reason %q does not say that CESQL is why", d.Reason)
			}
			if u := p.Unsupported(); !strings.Contains(u, "spec.filters[") || !strings.Contains(u, ".cesql") {
				t.Errorf("Unsupported() = %q, want the path of the CESQL expression", u)
			}
			// Every case puts the CESQL in the last filter, which must not match on its own either.
			if last := p.Spec.Filters[len(p.Spec.Filters)-1]; last.Matches(tc.event) {
				t.Errorf("Filter.Matches = true for %+v", last)
			}
		})
	}
}
