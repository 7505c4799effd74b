package oidc

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// DefaultTokenLifetime is what the dispatcher asks tokens to live. The apiserver may shorten it.
const DefaultTokenLifetime = time.Hour

// DefaultMaxTokens bounds the tokens a TokenProvider keeps: far more than the audiences of one
// channel's subscribers, replies and dead-letter sinks.
const DefaultMaxTokens = 1024

// sweepInterval is how often expired tokens are dropped while tokens are asked for.
const sweepInterval = time.Minute

// TokenProvider obtains service-account tokens for audiences through the TokenRequest API
// (serviceaccounts/token, create) and reuses each until 80% of its life has passed, so a busy
// subscriber costs one request an hour, and a token is never sent close to its expiry. Tokens
// past their expiry are dropped (subscribers, audiences and accounts come and go), and at most
// MaxTokens are kept.
type TokenProvider struct {
	Client kubernetes.Interface
	// Lifetime is the requested lifetime; default DefaultTokenLifetime.
	Lifetime time.Duration
	// MaxTokens is how many tokens are kept at most; default DefaultMaxTokens. Beyond it, those
	// due for renewal first are dropped.
	MaxTokens int
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	mu        sync.Mutex
	entries   map[tokenKey]*tokenEntry
	nextSweep time.Time
}

type tokenKey struct{ namespace, serviceAccount, audience string }

type tokenEntry struct {
	mu        sync.Mutex // held while a token is requested, so concurrent deliveries ask once
	token     string
	renewAt   time.Time
	expiresAt time.Time
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
		p.evict()
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
	e.expiresAt = exp
	return e.token, nil
}

// evict makes room before an entry is added: every minute it drops the entries whose
// token has expired (or was never obtained), and beyond MaxTokens those due for renewal first.
// An entry whose token is being requested right now is left alone. Called with p.mu held.
func (p *TokenProvider) evict() {
	limit := p.MaxTokens
	if limit <= 0 {
		limit = DefaultMaxTokens
	}
	now := p.now()
	full := len(p.entries) >= limit
	if !full && now.Before(p.nextSweep) {
		return
	}
	p.nextSweep = now.Add(sweepInterval)
	type candidate struct {
		key     tokenKey
		renewAt time.Time
	}
	var live []candidate
	for k, e := range p.entries {
		if !e.mu.TryLock() {
			continue
		}
		if e.token == "" || !now.Before(e.expiresAt) {
			delete(p.entries, k)
		} else {
			live = append(live, candidate{k, e.renewAt})
		}
		e.mu.Unlock()
	}
	if over := len(p.entries) - (limit - 1); over > 0 {
		slices.SortFunc(live, func(a, b candidate) int { return a.renewAt.Compare(b.renewAt) })
		for _, c := range live[:min(over, len(live))] {
			delete(p.entries, c.key)
		}
	}
}
