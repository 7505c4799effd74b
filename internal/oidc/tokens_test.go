package oidc

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// fakeTokens is a clientset whose TokenRequests succeed with the requested lifetime on clock.
func fakeTokens(clock func() time.Time) (*fake.Clientset, *int) {
	cs := fake.NewClientset()
	var mu sync.Mutex
	issued := new(int)
	cs.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "token" {
			return false, nil, nil
		}
		tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenRequest)
		mu.Lock()
		*issued++
		n := *issued
		mu.Unlock()
		out := tr.DeepCopy()
		out.Status = authenticationv1.TokenRequestStatus{
			Token:               fmt.Sprintf("token-%d", n),
			ExpirationTimestamp: metav1.NewTime(clock().Add(time.Duration(*tr.Spec.ExpirationSeconds) * time.Second)),
		}
		return true, out, nil
	})
	return cs, issued
}

// TestTokenProviderForgetsTokens: tokens of audiences no longer asked for are dropped once they
// expire, and no more than MaxTokens are kept however many audiences come, while a token in use
// is still reused. Before, every audience ever asked for stayed in the map for good.
func TestTokenProviderForgetsTokens(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(dt time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(dt) }
	cs, issued := fakeTokens(clock)
	tp := &TokenProvider{Client: cs, Lifetime: time.Hour, MaxTokens: 100, Now: clock}
	ctx := context.Background()
	size := func() int { tp.mu.Lock(); defer tp.mu.Unlock(); return len(tp.entries) }

	// Subscribers come and go: 80 audiences, each asked for once, then an hour and more.
	for i := range 80 {
		if _, err := tp.Token(ctx, "shop", "sub", fmt.Sprintf("aud-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	advance(61 * time.Minute)
	if _, err := tp.Token(ctx, "shop", "sub", "aud-current"); err != nil {
		t.Fatal(err)
	}
	if n := size(); n != 1 {
		t.Errorf("after 80 tokens expired, %d entries are kept, want 1 (the current one)", n)
	}

	// Many live audiences at once: the map stays within MaxTokens, dropping the tokens due
	// for renewal first, and the newest token is still reused rather than requested again.
	for i := range 1000 {
		if _, err := tp.Token(ctx, "shop", "sub", fmt.Sprintf("live-%d", i)); err != nil {
			t.Fatal(err)
		}
		if i%50 == 0 {
			advance(time.Second)
		}
	}
	if n := size(); n > 100 {
		t.Errorf("after 1000 live audiences, %d entries are kept, want at most MaxTokens (100)", n)
	}
	before := *issued
	if again, _ := tp.Token(ctx, "shop", "sub", "live-999"); *issued != before || again == "" {
		t.Errorf("the most recent token was not kept: %d more requests", *issued-before)
	}
}
