package receiver

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/kafkachannel/kafkachannel/internal/features"
	"github.com/kafkachannel/kafkachannel/internal/kafkatest"
	"github.com/kafkachannel/kafkachannel/internal/naming"
	"github.com/kafkachannel/kafkachannel/internal/oidc"
)

func serviceAccount(t *testing.T, cs kubernetes.Interface, ns, name string) {
	t.Helper()
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// TestSenderAuthentication runs the receiver with authentication-oidc enabled against the
// envtest apiserver's real service-account tokens and keys: 401 without or with a wrong token,
// the default mode without policies, and an EventPolicy's subjects and filters once one
// applies; only admitted events reach Kafka.
func TestSenderAuthentication(t *testing.T) {
	k := kafkatest.Start(t)
	createChannel(t, k, "shop", "orders", 1, true)
	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		t.Fatal(err)
	}
	serviceAccount(t, cs, "shop", "producer")
	serviceAccount(t, cs, "shop", "bystander")
	serviceAccount(t, cs, "elsewhere", "intruder")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	policies, err := WatchPolicies(ctx, restCfg)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := oidc.NewAPIServerKeys(restCfg)
	if err != nil {
		t.Fatal(err)
	}
	live := features.NewLive(features.Flags{TransportEncryption: features.EncryptionDisabled, OIDC: true, DefaultAuthorization: features.AllowSameNamespace})
	r := startReceiver(t, k, func(c *Config) {
		c.Features = live
		c.Auth = &Auth{Verifier: &oidc.Verifier{Source: keys}, Policies: policies}
	})
	tokens := &oidc.TokenProvider{Client: cs}
	audience := naming.ChannelAudience("shop", "orders")
	token := func(ns, sa, aud string) string {
		t.Helper()
		tok, err := tokens.Token(ctx, ns, sa, aud)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	url := r.url + naming.ChannelPath("shop", "orders")
	send := func(id, typ, authorization string) (int, string, http.Header) {
		t.Helper()
		h := with(binaryHeaders, "ce-id", id, "ce-type", typ)
		if authorization != "" {
			h["Authorization"] = authorization
		}
		resp, err := http.DefaultClient.Do(rawRequest(t, "POST", url, h, "hi"))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b)), resp.Header
	}
	expect := func(name string, code int, inBody string, got int, body string) {
		t.Helper()
		if got != code || !strings.Contains(body, inBody) {
			t.Errorf("%s: %d %q, want %d containing %q", name, got, body, code, inBody)
		}
	}

	code, body, hdr := send("no-token", "order.created", "")
	expect("no token", 401, "no Authorization header", code, body)
	if !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("401 without WWW-Authenticate: Bearer (got %q)", hdr.Get("WWW-Authenticate"))
	}
	code, body, _ = send("wrong-audience", "order.created", "Bearer "+token("shop", "producer", naming.ChannelAudience("shop", "invoices")))
	expect("token for another channel", 401, audience, code, body)
	code, body, _ = send("garbage", "order.created", "Bearer abc.def.ghi")
	expect("garbage token", 401, "not a signed JWT", code, body)
	code, body, _ = send("basic", "order.created", "Basic dXNlcjpwdw==")
	expect("basic auth", 401, "not a bearer token", code, body)

	producer := "Bearer " + token("shop", "producer", audience)
	code, body, _ = send("same-namespace", "order.created", producer)
	expect("no policy, same namespace", 202, "", code, body)
	code, body, _ = send("other-namespace", "order.created", "Bearer "+token("elsewhere", "intruder", audience))
	expect("no policy, other namespace", 403, "allow-same-namespace", code, body)

	// A policy for the channel: only the producer, only order events.
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(`
apiVersion: eventing.knative.dev/v1alpha1
kind: EventPolicy
metadata: {namespace: shop, name: producers-only}
spec:
  to: [{ref: {apiVersion: messaging.knative.dev/v1beta1, kind: KafkaChannel, name: orders}}]
  from: [{sub: "system:serviceaccount:shop:producer"}]
  filters: [{prefix: {type: order.}}]
`), &u.Object); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, u); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the policy in the receiver's index", func() error {
		if len(policies.For(Channel{Namespace: "shop", Name: "orders"})) != 1 {
			return errors.New("not yet")
		}
		return nil
	})
	code, body, _ = send("policy-allows", "order.created", producer)
	expect("named by the policy, matching filter", 202, "", code, body)
	code, body, _ = send("policy-filter", "invoice.created", producer)
	expect("named by the policy, filtered out", 403, "producers-only", code, body)
	code, body, _ = send("policy-bystander", "order.created", "Bearer "+token("shop", "bystander", audience))
	expect("same namespace, not named by the policy", 403, "system:serviceaccount:shop:bystander", code, body)

	var ids []string
	for _, m := range readTopic(t, k, naming.Topic("shop", "orders"), 1) {
		for _, h := range m.Headers {
			if h.Key == "ce_id" {
				ids = append(ids, string(h.Value))
			}
		}
	}
	if want := []string{"same-namespace", "policy-allows"}; !slices.Equal(ids, want) {
		t.Errorf("events in Kafka: %v, want only %v", ids, want)
	}
}
