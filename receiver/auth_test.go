package receiver

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
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

	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/environments/testlog"
	"github.com/kafkachannel/kafkachannel/internal/features"
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

	r, policies := startOIDCReceiver(t, k)
	ctx := context.Background()
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
	createPolicy(t, policies, Channel{Namespace: "shop", Name: "orders"}, `
apiVersion: eventing.knative.dev/v1alpha1
kind: EventPolicy
metadata: {namespace: shop, name: producers-only}
spec:
  to: [{ref: {apiVersion: messaging.knative.dev/v1beta1, kind: KafkaChannel, name: orders}}]
  from: [{sub: "system:serviceaccount:shop:producer"}]
  filters: [{prefix: {type: order.}}]
`)
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

// TestSenderRefusedBeforeBody is issue 22's defect 4 with OIDC on: a sender that no policy
// (or the default mode) can admit is refused on its headers alone, without the receiver
// waiting for (and holding) the body it announced; a sender a policy names, whose filters
// look at the event, is still judged on the decoded event.
func TestSenderRefusedBeforeBody(t *testing.T) {
	k := kafkatest.Start(t)
	createChannel(t, k, "gate", "guarded", 1, true)
	createChannel(t, k, "gate", "open", 1, true)
	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		t.Fatal(err)
	}
	serviceAccount(t, cs, "gate", "producer")
	serviceAccount(t, cs, "gate", "bystander")
	serviceAccount(t, cs, "outside", "intruder")
	r, policies := startOIDCReceiver(t, k)
	ctx := context.Background()
	createPolicy(t, policies, Channel{Namespace: "gate", Name: "guarded"}, `
apiVersion: eventing.knative.dev/v1alpha1
kind: EventPolicy
metadata: {namespace: gate, name: orders-from-producer}
spec:
  to: [{ref: {apiVersion: messaging.knative.dev/v1beta1, kind: KafkaChannel, name: guarded}}]
  from: [{sub: "system:serviceaccount:gate:producer"}]
  filters: [{prefix: {type: order.}}]
`)
	tokens := &oidc.TokenProvider{Client: cs}
	bearer := func(ns, sa, channel string) string {
		t.Helper()
		tok, err := tokens.Token(ctx, ns, sa, naming.ChannelAudience("gate", channel))
		if err != nil {
			t.Fatal(err)
		}
		return "Bearer " + tok
	}

	// Headers announcing 1 MiB, and no body: the answer must come without it.
	refused := []struct {
		name, channel, authorization string
		code                         int
		inBody                       string
	}{
		{name: "no token", channel: "guarded", code: 401, inBody: "no Authorization header"},
		{name: "not named by the policy", channel: "guarded", authorization: bearer("gate", "bystander", "guarded"), code: 403, inBody: "orders-from-producer"},
		{name: "other namespace, policy", channel: "guarded", authorization: bearer("outside", "intruder", "guarded"), code: 403, inBody: "orders-from-producer"},
		{name: "other namespace, default mode", channel: "open", authorization: bearer("outside", "intruder", "open"), code: 403, inBody: "allow-same-namespace"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", r.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = c.Close() }()
			head := "POST " + naming.ChannelPath("gate", tc.channel) + " HTTP/1.1\r\nHost: receiver\r\nce-specversion: 1.0\r\nce-id: 1\r\nce-source: /s\r\n" +
				"ce-type: order.created\r\nContent-Type: text/plain\r\nContent-Length: 1048576\r\n"
			if tc.authorization != "" {
				head += "Authorization: " + tc.authorization + "\r\n"
			}
			if _, err := c.Write([]byte(head + "\r\n")); err != nil {
				t.Fatal(err)
			}
			// Well before both the body idle timeout and the read timeout would answer.
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("no answer before the body was sent: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != tc.code || !strings.Contains(string(b), tc.inBody) {
				t.Errorf("%d %q, want %d containing %q", resp.StatusCode, b, tc.code, tc.inBody)
			}
		})
	}

	// The named sender is judged by the policy's filters on the event itself.
	for _, tc := range []struct {
		typ  string
		code int
	}{{"order.created", 202}, {"invoice.created", 403}} {
		h := with(binaryHeaders, "ce-type", tc.typ, "Authorization", bearer("gate", "producer", "guarded"))
		if code, body := post(t, rawRequest(t, "POST", r.url+naming.ChannelPath("gate", "guarded"), h, "hi")); code != tc.code {
			t.Errorf("producer sending %s: %d %q, want %d", tc.typ, code, body, tc.code)
		}
	}
}

// startOIDCReceiver starts a receiver with authentication-oidc enabled over plain http and the
// default mode allow-same-namespace, verifying the envtest apiserver's service-account tokens
// and enforcing the EventPolicies it serves (the index is returned for tests to wait on).
func startOIDCReceiver(t *testing.T, k *kafkatest.Kafka) (*testReceiver, *PolicyIndex) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	policies, err := WatchPolicies(ctx, restCfg, 0, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := oidc.NewAPIServerKeys(restCfg)
	if err != nil {
		t.Fatal(err)
	}
	live := features.NewLive(features.Flags{TransportEncryption: features.EncryptionDisabled, OIDC: true, DefaultAuthorization: features.AllowSameNamespace})
	return startReceiver(t, k, func(c *Config) {
		c.Features = live
		c.Auth = &Auth{Verifier: &oidc.Verifier{Source: keys}, Policies: policies}
	}), policies
}

// createPolicy creates the EventPolicy written in policyYAML and waits until the receiver's index
// applies exactly one policy to ch.
func createPolicy(t *testing.T, policies *PolicyIndex, ch Channel, policyYAML string) {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(policyYAML), &u.Object); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the policy in the receiver's index", func() error {
		if len(policies.For(ch)) != 1 {
			return errors.New("not yet")
		}
		return nil
	})
}
