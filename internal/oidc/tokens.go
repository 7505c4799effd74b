package oidc

import (
	"context"
	"fmt"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// DefaultTokenLifetime is what the dispatcher asks tokens to live. The apiserver may shorten it.
const DefaultTokenLifetime = time.Hour

// TokenProvider obtains service-account tokens for audiences through the TokenRequest API
// (serviceaccounts/token, create) and reuses each until 80% of its life has passed, so a busy
// subscriber costs one request an hour, and a token is never sent close to its expiry.
type TokenProvider struct {
	Client kubernetes.Interface
	// Lifetime is the requested lifetime; default DefaultTokenLifetime.
	Lifetime time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	mu      sync.Mutex
	entries map[tokenKey]*tokenEntry
}

type tokenKey struct{ namespace, serviceAccount, audience string }

type tokenEntry struct {
	mu      sync.Mutex // held while a token is requested, so concurrent deliveries ask once
	token   string
	renewAt time.Time
}

func (p *TokenProvider) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// Token returns a token of namespace/serviceAccount for audience.
func (p *TokenProvider) Token(ctx context.Context, namespace, serviceAccount, audience string) (string, error) {
	key := tokenKey{namespace, serviceAccount, audience}
	p.mu.Lock()
	if p.entries == nil {
		p.entries = map[tokenKey]*tokenEntry{}
	}
	e, ok := p.entries[key]
	if !ok {
		e = &tokenEntry{}
		p.entries[key] = e
	}
	p.mu.Unlock()

	e.mu.Lock()
	defer e.mu.Unlock()
	if e.token != "" && p.now().Before(e.renewAt) {
		return e.token, nil
	}
	lifetime := p.Lifetime
	if lifetime <= 0 {
		lifetime = DefaultTokenLifetime
	}
	secs := int64(lifetime / time.Second)
	issued := p.now()
	tr, err := p.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, serviceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &secs},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("requesting a token of service account %s/%s for audience %q: %w", namespace, serviceAccount, audience, err)
	}
	exp := tr.Status.ExpirationTimestamp.Time
	e.token = tr.Status.Token
	e.renewAt = issued.Add(exp.Sub(issued) * 8 / 10)
	return e.token, nil
}
