package oidc

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kafkachannel/kafkachannel/environments/envtestbin"
)

// startAPIServer is a real kube-apiserver: it signs service-account tokens and publishes its
// keys through OIDC discovery, as in a cluster.
func startAPIServer(t *testing.T) (*envtest.Environment, kubernetes.Interface) {
	t.Helper()
	envtestbin.Require(t)
	env := &envtest.Environment{}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return env, cs
}

func createServiceAccount(t *testing.T, cs kubernetes.Interface, ns, name string) {
	t.Helper()
	ctx := context.Background()
	_, _ = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyRealServiceAccountTokens gets tokens from the apiserver's TokenRequest API and
// checks them against the keys its OIDC discovery publishes.
func TestVerifyRealServiceAccountTokens(t *testing.T) {
	env, cs := startAPIServer(t)
	createServiceAccount(t, cs, "senders", "producer")
	const audience = "messaging.knative.dev/kafkachannel/orders/events"
	keys, err := NewAPIServerKeys(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	v := &Verifier{Source: keys}
	tp := &TokenProvider{Client: cs}
	ctx := context.Background()

	good, err := tp.Token(ctx, "senders", "producer", audience)
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(ctx, good, audience)
	if err != nil {
		t.Fatalf("a token for the audience was refused: %v", err)
	}
	if id.Subject != "system:serviceaccount:senders:producer" || id.Namespace != "senders" || id.ServiceAccount != "producer" {
		t.Errorf("identity %+v, want system:serviceaccount:senders:producer", id)
	}

	other, err := tp.Token(ctx, "senders", "producer", "messaging.knative.dev/kafkachannel/orders/other")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, ".")
	otherParts := strings.Split(other, ".")
	for _, tc := range []struct {
		name, token, want string
	}{
		{"another channel's audience", other, "not \"" + audience + "\""},
		{"payload swapped under a valid signature", parts[0] + "." + otherParts[1] + "." + parts[2], "signature does not verify"},
		{"signature cut off", parts[0] + "." + parts[1] + ".", "signature does not verify"},
		{"unsigned (alg none)", "eyJhbGciOiJub25lIn0." + parts[1] + ".", "not a signed JWT"},
		{"garbage", "not-a-jwt", "not a signed JWT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(ctx, tc.token, audience)
			if !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want ErrUnauthenticated saying %q", err, tc.want)
			}
		})
	}

	// Expiry: the same token, judged two hours later.
	late := &Verifier{Source: keys, Now: func() time.Time { return time.Now().Add(2 * time.Hour) }}
	if _, err := late.Verify(ctx, good, audience); !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("an expired token: %v, want ErrUnauthenticated saying expired", err)
	}
}

// TestTokenProviderCaches reuses a token until 80% of its lifetime, then asks for a new one.
func TestTokenProviderCaches(t *testing.T) {
	_, cs := startAPIServer(t)
	createServiceAccount(t, cs, "subs", "subscription")
	now := time.Now()
	tp := &TokenProvider{Client: cs, Lifetime: time.Hour, Now: func() time.Time { return now }}
	ctx := context.Background()
	first, err := tp.Token(ctx, "subs", "subscription", "aud-1")
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(40 * time.Minute)
	if again, _ := tp.Token(ctx, "subs", "subscription", "aud-1"); again != first {
		t.Error("a token two thirds into its life was not reused")
	}
	if other, _ := tp.Token(ctx, "subs", "subscription", "aud-2"); other == first {
		t.Error("another audience got the same token")
	}
	now = now.Add(10 * time.Minute) // 50 of 60 minutes
	renewed, err := tp.Token(ctx, "subs", "subscription", "aud-1")
	if err != nil {
		t.Fatal(err)
	}
	if renewed == first {
		t.Error("a token past 80% of its life was still handed out")
	}
	if _, err := tp.Token(ctx, "subs", "nobody", "aud-1"); err == nil || !strings.Contains(err.Error(), "subs/nobody") {
		t.Errorf("a missing service account: %v, want an error naming it", err)
	}
}
