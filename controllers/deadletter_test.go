package controllers

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
)

// A dead-letter sink ref in another namespace is followed only while config-features enables
// cross-namespace-event-links, as in Knative: otherwise a channel's owner could have events
// routed to (and the manager read) an Addressable in a namespace they have no access to. The
// flag is followed live both ways, and a ref that names the channel's own namespace needs no
// flag.
func TestCrossNamespaceDeadLetterSinkNeedsTheFeature(t *testing.T) {
	k := kafkatest.Start(t)
	f := startFixture(t, fixtureOpts{secret: map[string]string{"brokers": k.BootstrapServers()}})
	other := newNamespace(t, f.ctx, "other")
	for _, ns := range []string{other, f.chNS} {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sink"},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
		}
		if err := k8s.Create(f.ctx, svc); err != nil {
			t.Fatalf("creating Service %s/sink: %v", ns, err)
		}
	}
	dlsIn := func(ns string) func(*v1beta1.KafkaChannel) {
		return func(ch *v1beta1.KafkaChannel) {
			ch.Spec.Delivery = &v1beta1.DeliverySpec{DeadLetterSink: &v1beta1.Destination{
				Ref: &v1beta1.KReference{APIVersion: "v1", Kind: "Service", Namespace: ns, Name: "sink"},
			}}
		}
	}
	f.createChannel("cross", dlsIn(other))
	f.createChannel("same", dlsIn(f.chNS))
	crossURI := "http://sink." + other + ".svc.cluster.local/"
	sameURI := "http://sink." + f.chNS + ".svc.cluster.local/"

	const notAllowed = "CrossNamespaceRefNotAllowed"
	steps := []struct {
		name   string
		flag   *string // nil: key absent
		status metav1.ConditionStatus
		reason string
		uri    string
	}{
		{"flag absent (Knative's default: disabled)", nil, metav1.ConditionFalse, notAllowed, ""},
		{"flag disabled", ptr.To("disabled"), metav1.ConditionFalse, notAllowed, ""},
		{"flag allowed (not enabled)", ptr.To("allowed"), metav1.ConditionFalse, notAllowed, ""},
		{"flag enabled", ptr.To("Enabled"), metav1.ConditionTrue, "DeadLetterSinkResolved", crossURI},
		{"flag disabled again: the address is withdrawn", ptr.To("disabled"), metav1.ConditionFalse, notAllowed, ""},
	}
	for _, st := range steps {
		data := map[string]string{}
		if st.flag != nil {
			data["cross-namespace-event-links"] = *st.flag
		}
		f.writeFeatures(data)
		c := f.waitCondition("cross", v1beta1.ConditionDeadLetterSinkReady, st.status, st.reason)
		if got := ptr.Deref(f.channel("cross").Status.DeadLetterSinkURI, ""); got != st.uri {
			t.Errorf("%s: deadLetterSinkUri = %q, want %q", st.name, got, st.uri)
		}
		if st.status == metav1.ConditionFalse && (!strings.Contains(c.Message, other) || !strings.Contains(c.Message, "cross-namespace-event-links")) {
			t.Errorf("%s: message %q should name the namespace and the feature", st.name, c.Message)
		}
		f.waitCondition("same", v1beta1.ConditionDeadLetterSinkReady, metav1.ConditionTrue, "DeadLetterSinkResolved")
		if got := ptr.Deref(f.channel("same").Status.DeadLetterSinkURI, ""); got != sameURI {
			t.Errorf("%s: a ref to the channel's own namespace: deadLetterSinkUri = %q, want %q", st.name, got, sameURI)
		}
	}
}
