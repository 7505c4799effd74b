package controllers

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/certs"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/internal/features"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

func (f *fixture) writeFeatures(data map[string]string) {
	f.t.Helper()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: f.opNS, Name: features.ConfigMap}}
	if _, err := ctrlCreateOrUpdate(f.ctx, cm, func() { cm.Data = data }); err != nil {
		f.t.Fatalf("writing config-features: %v", err)
	}
}

// addressView is status.address and status.addresses in one comparable line.
func addressView(ch *v1beta1.KafkaChannel) string {
	one := func(a *v1beta1.Addressable) string {
		if a == nil {
			return "<none>"
		}
		s := fmt.Sprintf("%s=%s", deref(a.Name), a.URL)
		if a.CACerts != nil {
			s += " +CA"
		}
		if a.Audience != nil {
			s += " aud=" + *a.Audience
		}
		return s
	}
	parts := []string{"address: " + one(ch.Status.Address)}
	for i := range ch.Status.Addresses {
		parts = append(parts, one(&ch.Status.Addresses[i]))
	}
	return strings.Join(parts, " | ")
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// TestAddressesFollowFeatures changes config-features and the receiver's certificate Secret
// under a running manager and expects each channel's published addresses to follow, as a
// Subscription or a sender reading status would see them.
func TestAddressesFollowFeatures(t *testing.T) {
	k := kafkatest.Start(t)
	f := startFixture(t, fixtureOpts{secret: map[string]string{"brokers": k.BootstrapServers()}})
	const name = "secure"
	f.createChannel(name, func(ch *v1beta1.KafkaChannel) { ch.Spec.NumPartitions = 1 })
	httpURL := naming.ChannelURL(f.chNS, name)
	httpsURL := naming.ChannelHTTPSURL(f.opNS, f.chNS, name)
	aud := naming.ChannelAudience(f.chNS, name)

	waitAddresses := func(want string) *v1beta1.KafkaChannel {
		t.Helper()
		var ch *v1beta1.KafkaChannel
		eventually(t, 45*time.Second, "addresses "+want, func() string {
			ch = f.channel(name)
			if got := addressView(ch); got != want {
				return got
			}
			return ""
		})
		return ch
	}

	// No config-features: Knative's defaults, http only.
	f.waitCondition(name, v1beta1.ConditionAddressable, metav1.ConditionTrue, "AddressSet")
	waitAddresses(fmt.Sprintf("address: http=%s | http=%s", httpURL, httpURL))

	// Permissive without a certificate: http still works, but the channel says why https is missing.
	f.writeFeatures(map[string]string{"transport-encryption": "permissive"})
	c := f.waitCondition(name, v1beta1.ConditionAddressable, metav1.ConditionFalse, "TLSSecretNotFound")
	if !strings.Contains(c.Message, f.cfg.ReceiverTLSSecret) {
		t.Errorf("Addressable message %q does not name the Secret %s", c.Message, f.cfg.ReceiverTLSSecret)
	}
	waitAddresses(fmt.Sprintf("address: http=%s | http=%s", httpURL, httpURL))

	// cert-manager writes the Secret: both addresses, https with the CA senders must trust.
	ca, err := certs.NewCA("kafkachannel test CA")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(naming.ReceiverHost(f.opNS))
	if err != nil {
		t.Fatal(err)
	}
	tlsSecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: f.opNS, Name: f.cfg.ReceiverTLSSecret}}
	if _, err := ctrlCreateOrUpdate(f.ctx, tlsSecret, func() {
		tlsSecret.Type = corev1.SecretTypeTLS
		tlsSecret.Data = map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM, "ca.crt": ca.CertPEM}
	}); err != nil {
		t.Fatal(err)
	}
	f.waitCondition(name, v1beta1.ConditionAddressable, metav1.ConditionTrue, "AddressSet")
	ch := waitAddresses(fmt.Sprintf("address: http=%s | http=%s | https=%s +CA", httpURL, httpURL, httpsURL))
	if got := *ch.Status.Addresses[1].CACerts; got != string(ca.CertPEM) {
		t.Errorf("https CACerts = %q, want the Secret's ca.crt", got)
	}

	// Strict with OIDC: https only, with the channel's audience.
	f.writeFeatures(map[string]string{"transport-encryption": "strict", "authentication-oidc": "enabled"})
	waitAddresses(fmt.Sprintf("address: https=%s +CA aud=%s | https=%s +CA aud=%s", httpsURL, aud, httpsURL, aud))

	// OIDC alone: the http address carries the audience.
	f.writeFeatures(map[string]string{"authentication-oidc": "enabled"})
	waitAddresses(fmt.Sprintf("address: http=%s aud=%s | http=%s aud=%s", httpURL, aud, httpURL, aud))

	// A typo in a security setting is not silently ignored.
	f.writeFeatures(map[string]string{"transport-encryption": "strcit"})
	c = f.waitCondition(name, v1beta1.ConditionConfigurationReady, metav1.ConditionFalse, "FeaturesInvalid")
	if !strings.Contains(c.Message, `transport-encryption "strcit"`) {
		t.Errorf("ConfigurationReady message %q does not quote the bad value", c.Message)
	}
	f.waitCondition(name, v1beta1.ConditionReady, metav1.ConditionFalse, "FeaturesInvalid")
	// ...and a key the manager cannot read is at its strictest: https only, never plain http.
	waitAddresses(fmt.Sprintf("address: https=%s +CA | https=%s +CA", httpsURL, httpsURL))

	// The receiver serves https from the Secret, mounted optional, and its Service exposes 443.
	dep := &appsv1.Deployment{}
	if err := k8s.Get(f.ctx, client.ObjectKey{Namespace: f.opNS, Name: naming.ReceiverName}, dep); err != nil {
		t.Fatal(err)
	}
	pod := dep.Spec.Template.Spec
	if !slices.ContainsFunc(pod.Containers[0].Ports, func(p corev1.ContainerPort) bool { return p.Name == "https" && p.ContainerPort == 8443 }) {
		t.Errorf("receiver container ports %v lack https 8443", pod.Containers[0].Ports)
	}
	if !slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool {
		return v.Secret != nil && v.Secret.SecretName == f.cfg.ReceiverTLSSecret && v.Secret.Optional != nil && *v.Secret.Optional
	}) {
		t.Errorf("receiver volumes %v lack the optional certificate Secret", pod.Volumes)
	}
	svc := &corev1.Service{}
	if err := k8s.Get(f.ctx, client.ObjectKey{Namespace: f.opNS, Name: naming.ReceiverName}, svc); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "https" && p.Port == 443 }) {
		t.Errorf("receiver Service ports %v lack https 443", svc.Spec.Ports)
	}
}

// TestPoliciesInStatus: with OIDC enabled the channel lists the EventPolicies of its namespace
// that apply to it, following their creation; with OIDC off it lists none.
func TestPoliciesInStatus(t *testing.T) {
	k := kafkatest.Start(t)
	f := startFixture(t, fixtureOpts{secret: map[string]string{"brokers": k.BootstrapServers()}})
	f.writeFeatures(map[string]string{"authentication-oidc": "enabled"})
	f.createChannel("guarded", func(ch *v1beta1.KafkaChannel) { ch.Spec.NumPartitions = 1 })
	policy := func(name, to string) {
		t.Helper()
		u := &unstructured.Unstructured{}
		doc := fmt.Sprintf("{apiVersion: eventing.knative.dev/v1alpha1, kind: EventPolicy, metadata: {namespace: %s, name: %s}, spec: {%s from: [{sub: x}]}}", f.chNS, name, to)
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatal(err)
		}
		if err := k8s.Create(f.ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	policies := func(want string) {
		t.Helper()
		eventually(t, 45*time.Second, "status.policies "+want, func() string {
			var names []string
			for _, p := range f.channel("guarded").Status.Policies {
				names = append(names, p.APIVersion+"/"+p.Name)
			}
			if got := strings.Join(names, ","); got != want {
				return got
			}
			return ""
		})
	}
	f.waitCondition("guarded", v1beta1.ConditionAddressable, metav1.ConditionTrue, "AddressSet")
	policy("whole-namespace", "")
	policy("this-channel", "to: [{ref: {apiVersion: messaging.knative.dev/v1beta1, kind: KafkaChannel, name: guarded}}],")
	policy("other-channel", "to: [{ref: {apiVersion: messaging.knative.dev/v1beta1, kind: KafkaChannel, name: open}}],")
	policies("eventing.knative.dev/v1alpha1/this-channel,eventing.knative.dev/v1alpha1/whole-namespace")
	if c := meta.FindStatusCondition(f.channel("guarded").Status.Conditions, ConditionEventPoliciesReady); c != nil {
		t.Errorf("%s is %s with only usable policies, want it absent", ConditionEventPoliciesReady, c.Status)
	}

	// A policy the receiver cannot evaluate admits nothing, and the channel says so.
	policy("with-cesql", "to: [{ref: {apiVersion: messaging.knative.dev/v1beta1, kind: KafkaChannel, name: guarded}}], filters: [{not: {cesql: \"type = 'admin'\"}}],")
	if c := f.waitCondition("guarded", ConditionEventPoliciesReady, metav1.ConditionFalse, "UnsupportedEventPolicy"); !strings.Contains(c.Message, "with-cesql: spec.filters[0].not.cesql") {
		t.Errorf("condition message %q does not name the policy and its CESQL filter", c.Message)
	}

	f.writeFeatures(map[string]string{"authentication-oidc": "disabled"})
	policies("")
	eventually(t, 45*time.Second, ConditionEventPoliciesReady+" removed", func() string {
		if c := meta.FindStatusCondition(f.channel("guarded").Status.Conditions, ConditionEventPoliciesReady); c != nil {
			return string(c.Status) + " " + c.Reason
		}
		return ""
	})
}
