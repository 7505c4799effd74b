package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1beta1 "github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/certs"
	"github.com/kafkachannel/kafkachannel/environments/localstack"
	"github.com/kafkachannel/kafkachannel/environments/poll"
	"github.com/kafkachannel/kafkachannel/internal/eventpolicy"
	"github.com/kafkachannel/kafkachannel/internal/features"
	"github.com/kafkachannel/kafkachannel/internal/naming"
	"github.com/kafkachannel/kafkachannel/internal/oidc"
)

// oidcSubscriber is an https subscriber that admits only requests bearing a service-account
// token of the stack's apiserver for its audience, and records who sent what.
type oidcSubscriber struct {
	srv      *httptest.Server
	caPEM    string
	mu       sync.Mutex
	subjects map[string]string // event id -> token subject
	refused  []string
}

func newOIDCSubscriber(t *testing.T, s *localstack.Stack, audience string) *oidcSubscriber {
	t.Helper()
	keys, err := oidc.NewAPIServerKeys(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	v := &oidc.Verifier{Source: keys}
	ca, err := certs.NewCA("subscriber CA")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	o := &oidcSubscriber{caPEM: string(ca.CertPEM), subjects: map[string]string{}}
	o.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		tok, err := oidc.BearerToken(r.Header)
		var id oidc.Identity
		if err == nil {
			id, err = v.Verify(r.Context(), tok, audience)
		}
		o.mu.Lock()
		defer o.mu.Unlock()
		if err != nil {
			o.refused = append(o.refused, err.Error())
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		o.subjects[r.Header.Get("Ce-Id")] = id.Subject
		w.WriteHeader(http.StatusAccepted)
	}))
	o.srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	o.srv.StartTLS()
	t.Cleanup(o.srv.Close)
	return o
}

func (o *oidcSubscriber) subject(id string) (string, []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.subjects[id], append([]string(nil), o.refused...)
}

// installEventPolicyCRD stands in for Knative Eventing's CRD (test/crds).
func installEventPolicyCRD(t *testing.T, s *localstack.Stack) {
	t.Helper()
	repo, err := localstack.FindRepo()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(repo, "test", "crds", "eventing.knative.dev_eventpolicies.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	crd := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(b, &crd.Object); err != nil {
		t.Fatal(err)
	}
	if err := s.Client.Create(context.Background(), crd); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	poll.Eventually(t, time.Minute, "the EventPolicy API served", func() error {
		l := &unstructured.UnstructuredList{}
		l.SetGroupVersionKind(eventpolicy.GVK.GroupVersion().WithKind("EventPolicyList"))
		return s.Client.List(context.Background(), l)
	})
}

// TestSecurityEndToEnd turns on transport encryption and OIDC through config-features on the
// local stack, whose apiserver issues real service-account tokens, and checks what senders and
// subscribers see: the https address with its CA, 401 for a token of another audience, 403 for
// a sender the channel's EventPolicy leaves out (with nothing written to Kafka), a subscriber
// that receives a valid token of the subscription's service account, and plain http refused
// once encryption is strict.
func TestSecurityEndToEnd(t *testing.T) {
	s := startStack(t)
	ctx := context.Background()
	const ns, name = "default", "secure"
	installEventPolicyCRD(t, s)
	cs, err := kubernetes.NewForConfig(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, sa := range []struct{ ns, name string }{{ns, "producer"}, {ns, "subscription-oidc"}, {"elsewhere", "intruder"}} {
		_, _ = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: sa.ns}}, metav1.CreateOptions{})
		if _, err := cs.CoreV1().ServiceAccounts(sa.ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa.name}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	setFeatures := func(data map[string]string) {
		t.Helper()
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: s.Opts.OperatorNamespace, Name: features.ConfigMap}}
		err := s.Client.Get(ctx, client.ObjectKeyFromObject(cm), cm)
		cm.Data = data
		if apierrors.IsNotFound(err) {
			err = s.Client.Create(ctx, cm)
		} else if err == nil {
			err = s.Client.Update(ctx, cm)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	setFeatures(map[string]string{"transport-encryption": "permissive", "authentication-oidc": "enabled"})

	// The subscription's identity and the subscriber's audience, as Knative writes them.
	sub := newOIDCSubscriber(t, s, "subscriber-audience")
	subURL := sub.srv.URL + "/"
	kc := &v1beta1.KafkaChannel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1beta1.KafkaChannelSpec{NumPartitions: 1, ReplicationFactor: 1, RetentionDuration: "PT1H",
			Subscribers: []v1beta1.SubscriberSpec{{
				Name: "oidc", UID: "uid-oidc", Generation: 1, SubscriberURI: &subURL,
				SubscriberCACerts: &sub.caPEM, SubscriberAudience: ptr("subscriber-audience"),
				Auth: &v1beta1.AuthStatus{ServiceAccountName: ptr("subscription-oidc")},
			}}},
	}
	if err := s.Client.Create(ctx, kc); err != nil {
		t.Fatal(err)
	}
	var https v1beta1.Addressable
	poll.Eventually(t, 2*time.Minute, "channel Ready with an https address and its subscriber ready", func() error {
		if err := s.Client.Get(ctx, client.ObjectKeyFromObject(kc), kc); err != nil {
			return err
		}
		var conds []string
		ready := false
		for _, c := range kc.Status.Conditions {
			conds = append(conds, fmt.Sprintf("%s=%s(%s)", c.Type, c.Status, c.Message))
			ready = ready || (c.Type == v1beta1.ConditionReady && c.Status == metav1.ConditionTrue)
		}
		if !ready {
			return fmt.Errorf("not Ready: %v", conds)
		}
		if len(kc.Status.Subscribers) != 1 || kc.Status.Subscribers[0].Ready != "True" {
			return fmt.Errorf("subscribers %+v", kc.Status.Subscribers)
		}
		for _, a := range kc.Status.Addresses {
			if a.Name != nil && *a.Name == "https" && a.CACerts != nil && a.Audience != nil {
				https = a
				return nil
			}
		}
		return fmt.Errorf("addresses %+v lack https with CACerts and audience", kc.Status.Addresses)
	})
	if *https.Audience != naming.ChannelAudience(ns, name) {
		t.Errorf("audience %q, want %q", *https.Audience, naming.ChannelAudience(ns, name))
	}

	// Senders reach the stack's https port with the published CA (the certificate also names
	// 127.0.0.1, where the stack exposes the receiver Service).
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(*https.CACerts)) {
		t.Fatal("status CACerts holds no certificate")
	}
	tlsClient := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	tokens := &oidc.TokenProvider{Client: cs}
	token := func(ns, sa, aud string) string {
		t.Helper()
		tok, err := tokens.Token(ctx, ns, sa, aud)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	post := func(c *http.Client, base, id, tok string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+naming.ChannelPath(ns, name), strings.NewReader(`{"n":1}`))
		for k, v := range map[string]string{"Ce-Specversion": "1.0", "Ce-Id": id, "Ce-Source": "/e2e", "Ce-Type": "order.created", "Content-Type": "application/json"} {
			req.Header.Set(k, v)
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", base, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	audience := naming.ChannelAudience(ns, name)
	producer := token(ns, "producer", audience)
	if code, body := post(tlsClient, s.ReceiverTLSURL, "accepted-1", producer); code != http.StatusAccepted {
		t.Fatalf("https with a token for the channel: %d %s", code, body)
	}
	if code, body := post(tlsClient, s.ReceiverTLSURL, "wrong-audience", token(ns, "producer", "someone-else")); code != http.StatusUnauthorized {
		t.Errorf("token for another audience: %d %s, want 401", code, body)
	}

	// An EventPolicy for the channel lets only the producer in.
	policy := &unstructured.Unstructured{}
	_ = yaml.Unmarshal([]byte(fmt.Sprintf(`{apiVersion: eventing.knative.dev/v1alpha1, kind: EventPolicy, metadata: {namespace: %s, name: producer-only},
spec: {to: [{ref: {apiVersion: messaging.knative.dev/v1beta1, kind: KafkaChannel, name: %s}}], from: [{sub: "system:serviceaccount:%s:producer"}]}}`, ns, name, ns)), &policy.Object)
	if err := s.Client.Create(ctx, policy); err != nil {
		t.Fatal(err)
	}
	intruder := token("elsewhere", "intruder", audience)
	poll.Eventually(t, time.Minute, "the intruder refused by the policy, listed in status.policies", func() error {
		if code, body := post(tlsClient, s.ReceiverTLSURL, "intruder", intruder); code != http.StatusForbidden {
			return fmt.Errorf("intruder: %d %s", code, body)
		}
		if err := s.Client.Get(ctx, client.ObjectKeyFromObject(kc), kc); err != nil {
			return err
		}
		if len(kc.Status.Policies) != 1 || kc.Status.Policies[0].Name != "producer-only" {
			return fmt.Errorf("status.policies %+v", kc.Status.Policies)
		}
		return nil
	})
	if code, body := post(tlsClient, s.ReceiverTLSURL, "accepted-2", producer); code != http.StatusAccepted {
		t.Fatalf("the producer under its policy: %d %s", code, body)
	}

	// Strict: plain http is refused, https goes on.
	setFeatures(map[string]string{"transport-encryption": "strict", "authentication-oidc": "enabled"})
	poll.Eventually(t, time.Minute, "plain http refused in strict mode", func() error {
		if code, body := post(http.DefaultClient, s.ReceiverURL, "plain-strict", producer); code != http.StatusForbidden || !strings.Contains(body, "https only") {
			return fmt.Errorf("http in strict mode: %d %s", code, body)
		}
		return nil
	})
	if code, body := post(tlsClient, s.ReceiverTLSURL, "accepted-3", producer); code != http.StatusAccepted {
		t.Fatalf("https in strict mode: %d %s", code, body)
	}

	// The subscriber got each accepted event with a valid token of the subscription's account.
	for _, id := range []string{"accepted-1", "accepted-2", "accepted-3"} {
		poll.Eventually(t, time.Minute, "event "+id+" at the subscriber", func() error {
			subj, refused := sub.subject(id)
			if subj == "" {
				return fmt.Errorf("not received; refused so far: %v", refused)
			}
			if subj != "system:serviceaccount:"+ns+":subscription-oidc" {
				return fmt.Errorf("delivered with the token of %s", subj)
			}
			return nil
		})
	}

	// Kafka holds exactly the accepted events.
	var ids []string
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: s.Brokers, Topic: naming.Topic(ns, name), Partition: 0, MaxWait: 100 * time.Millisecond, MaxBytes: 1 << 20})
	defer r.Close()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		m, err := r.ReadMessage(rctx)
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range m.Headers {
			// plain-strict was accepted while the switch to strict was on its way (the poll
			// above sends until refused); the others must never appear.
			if h.Key == "ce_id" && string(h.Value) != "plain-strict" {
				ids = append(ids, string(h.Value))
			}
		}
	}
	if want := []string{"accepted-1", "accepted-2", "accepted-3"}; !slices.Equal(ids, want) {
		t.Errorf("events in Kafka: %v, want only %v", ids, want)
	}
}
