// Package oidc is Knative's sender authentication for the data plane: the receiver verifies
// that a request's bearer token is a Kubernetes service-account token issued for the channel's
// audience (Verifier, keys from the kube-apiserver's OIDC discovery), and the dispatcher obtains
// such tokens for its destinations' audiences through the TokenRequest API (TokenProvider).
package oidc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"k8s.io/client-go/rest"
)

// ErrUnauthenticated marks a request whose token is missing or not acceptable: the answer is 401.
var ErrUnauthenticated = errors.New("unauthenticated")

// ErrKeysUnavailable marks a failure to learn the issuer's keys: the sender is not at fault,
// the answer is 503 so it retries.
var ErrKeysUnavailable = errors.New("the service-account issuer's keys are unavailable")

// signingAlgorithms are those the kube-apiserver signs service-account tokens with (RSA or
// ECDSA keys). "none" and HMAC are never accepted.
var signingAlgorithms = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512, jose.PS256, jose.PS384, jose.PS512}

// maxTokenBytes bounds what is parsed; service-account tokens are around 1 kB.
const maxTokenBytes = 16 << 10

// clockSkew is tolerated on exp, nbf and iat.
const clockSkew = 30 * time.Second

// Identity is who a verified token speaks for.
type Identity struct {
	// Subject is the token's sub, "system:serviceaccount:<namespace>:<name>" for
	// service-account tokens.
	Subject string
	// Namespace and ServiceAccount are from the token's kubernetes.io claims, empty for tokens
	// of other issuers.
	Namespace, ServiceAccount string
}

// KeySource returns the issuer's identifier and its current key set; refresh asks it to fetch
// again rather than answer from a cache (a token named a key it did not know).
type KeySource interface {
	Keys(ctx context.Context, refresh bool) (issuer string, keys *jose.JSONWebKeySet, err error)
}

// Verifier checks bearer tokens. It is safe for concurrent use.
type Verifier struct {
	Source KeySource
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

type kubernetesClaims struct {
	Kubernetes struct {
		Namespace      string `json:"namespace"`
		ServiceAccount struct {
			Name string `json:"name"`
		} `json:"serviceaccount"`
	} `json:"kubernetes.io"`
}

// BearerToken extracts the token of an "Authorization: Bearer <token>" header.
func BearerToken(h http.Header) (string, error) {
	v := h.Get("Authorization")
	if v == "" {
		return "", fmt.Errorf("%w: no Authorization header; send a service-account token for the channel's audience as Authorization: Bearer <token>", ErrUnauthenticated)
	}
	scheme, tok, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", fmt.Errorf("%w: the Authorization header is not a bearer token", ErrUnauthenticated)
	}
	return strings.TrimSpace(tok), nil
}

// Verify checks that raw is a token signed by the issuer, valid now, and issued for audience.
// Errors wrap ErrUnauthenticated (the token is at fault) or ErrKeysUnavailable.
func (v *Verifier) Verify(ctx context.Context, raw, audience string) (Identity, error) {
	bad := func(format string, args ...any) (Identity, error) {
		return Identity{}, fmt.Errorf("%w: "+format, append([]any{ErrUnauthenticated}, args...)...)
	}
	if audience == "" {
		return bad("no audience to check the token against")
	}
	if len(raw) > maxTokenBytes {
		return bad("the token is longer than %d bytes", maxTokenBytes)
	}
	tok, err := jwt.ParseSigned(raw, signingAlgorithms)
	if err != nil {
		return bad("the token is not a signed JWT: %v", err)
	}
	if len(tok.Headers) != 1 {
		return bad("the token has %d signatures, want 1", len(tok.Headers))
	}
	issuer, keys, err := v.Source.Keys(ctx, false)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrKeysUnavailable, err)
	}
	kid := tok.Headers[0].KeyID
	candidates := keys.Key(kid)
	if len(candidates) == 0 {
		// The issuer may have rotated its keys since they were fetched.
		if issuer, keys, err = v.Source.Keys(ctx, true); err != nil {
			return Identity{}, fmt.Errorf("%w: %w", ErrKeysUnavailable, err)
		}
		candidates = keys.Key(kid)
	}
	if len(candidates) == 0 {
		return bad("the token is signed with key %q, which the issuer %s does not publish", kid, issuer)
	}
	var claims jwt.Claims
	var kube kubernetesClaims
	verified := false
	for _, k := range candidates {
		if !k.Valid() || !k.IsPublic() {
			continue
		}
		if err = tok.Claims(k.Key, &claims, &kube); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return bad("the token's signature does not verify: %v", err)
	}
	if claims.Expiry == nil {
		return bad("the token has no expiry")
	}
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{Issuer: issuer, AnyAudience: jwt.Audience{audience}, Time: now}, clockSkew); err != nil {
		switch {
		case errors.Is(err, jwt.ErrInvalidAudience):
			return bad("the token is for audience %v, not %q", []string(claims.Audience), audience)
		case errors.Is(err, jwt.ErrInvalidIssuer):
			return bad("the token is issued by %q, not the cluster's service-account issuer %q", claims.Issuer, issuer)
		}
		return bad("%v", err)
	}
	if claims.Subject == "" {
		return bad("the token has no subject")
	}
	return Identity{
		Subject:        claims.Subject,
		Namespace:      kube.Kubernetes.Namespace,
		ServiceAccount: kube.Kubernetes.ServiceAccount.Name,
	}, nil
}

// APIServerKeys learns the service-account issuer and its keys from the kube-apiserver's OIDC
// discovery (/.well-known/openid-configuration, /openid/v1/jwks) with the caller's own
// credentials.
//
// Verification never waits for the apiserver while there are keys to verify with: keys older
// than MaxAge are refreshed in the background, one fetch at a time, and the last good keys are
// used meanwhile and for as long as fetches fail. Only a caller that cannot verify with what is
// cached (no keys yet, or a token naming a key not among them) waits for a fetch, at most
// RefreshWait. Fetches are at least MinRefresh apart, so a flood of forged key ids cannot flood
// the apiserver, and after a failure the gap doubles up to MaxBackoff.
type APIServerKeys struct {
	host   string
	client *http.Client

	// MaxAge is how old keys get before a background fetch replaces them; default 5m. They
	// are used until one succeeds.
	MaxAge time.Duration
	// MinRefresh is the least time between two fetches, and the first wait after a failed
	// one; default 10s.
	MinRefresh time.Duration
	// MaxBackoff caps the wait after consecutive failed fetches; default 2m.
	MaxBackoff time.Duration
	// RefreshWait is the longest a caller that needs new keys waits for a fetch; default 5s.
	// It then gets ErrKeysUnavailable (503), and the fetch goes on.
	RefreshWait time.Duration
	// Now is the clock of MaxAge, MinRefresh and the backoff; time.Now when nil.
	Now func() time.Time

	mu         sync.Mutex
	issuer     string
	keys       *jose.JSONWebKeySet
	fetched    time.Time     // end of the last successful fetch
	generation uint64        // successful fetches so far
	attempted  time.Time     // end of the last fetch, successful or not
	failures   int           // consecutive failed fetches
	lastErr    error         // of the last fetch, nil after a success
	inflight   chan struct{} // closed when the fetch in flight ends; nil when none runs
}

// fetchTimeout bounds one fetch (two GETs) run in the background: no caller's context ends it.
const fetchTimeout = 30 * time.Second

// NewAPIServerKeys reaches the apiserver of cfg.
func NewAPIServerKeys(cfg *rest.Config) (*APIServerKeys, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("building an HTTP client for the kube-apiserver: %w", err)
	}
	hc.Timeout = 10 * time.Second
	return &APIServerKeys{host: strings.TrimSuffix(cfg.Host, "/"), client: hc}, nil
}

func (a *APIServerKeys) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Keys implements KeySource. Without refresh it answers from the cache whenever there are keys,
// starting a background fetch when they are older than MaxAge. With refresh (the token named a
// key not in the cache), or with no keys yet, it starts a fetch unless one ran less than
// MinRefresh ago (or, after failures, is backing off) and waits for the fetch in flight; it
// answers ErrKeysUnavailable's cause when no fetch since succeeded, unless the cached keys were
// fetched successfully so recently that fetching again is not allowed: those are current.
func (a *APIServerKeys) Keys(ctx context.Context, refresh bool) (string, *jose.JSONWebKeySet, error) {
	a.mu.Lock()
	now := a.now()
	need := refresh || a.keys == nil
	stale := a.keys != nil && now.Sub(a.fetched) >= orDefault(a.MaxAge, 5*time.Minute)
	if (need || stale) && a.inflight == nil && !now.Before(a.nextAttempt()) {
		a.startFetch()
	}
	if !need {
		issuer, keys := a.issuer, a.keys
		a.mu.Unlock()
		return issuer, keys, nil
	}
	wait, gen := a.inflight, a.generation
	a.mu.Unlock()

	if wait != nil {
		t := time.NewTimer(orDefault(a.RefreshWait, 5*time.Second))
		defer t.Stop()
		select {
		case <-wait:
		case <-t.C:
		case <-ctx.Done():
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.keys != nil && (a.generation > gen || (wait == nil && a.failures == 0)):
		return a.issuer, a.keys, nil
	case a.inflight != nil:
		return "", nil, errors.New("fetching the keys from the kube-apiserver is taking long")
	case a.lastErr != nil:
		return "", nil, fmt.Errorf("fetching the keys failed %d times in a row, next try after %s: %w",
			a.failures, a.nextAttempt().Format(time.RFC3339), a.lastErr)
	}
	return "", nil, errors.New("the keys have not been fetched yet")
}

// nextAttempt is when a fetch may start: MinRefresh after the last one, doubling with each
// consecutive failure up to MaxBackoff. Called with mu held.
func (a *APIServerKeys) nextAttempt() time.Time {
	if a.attempted.IsZero() {
		return time.Time{}
	}
	minRefresh := orDefault(a.MinRefresh, 10*time.Second)
	gap := minRefresh
	if a.failures > 1 {
		maxBackoff := max(orDefault(a.MaxBackoff, 2*time.Minute), minRefresh)
		for i := 1; i < a.failures && gap < maxBackoff; i++ {
			gap *= 2
		}
		gap = min(gap, maxBackoff)
	}
	return a.attempted.Add(gap)
}

// startFetch runs one fetch outside the lock; its outcome, success or failure, is recorded.
// Called with mu held and no fetch in flight.
func (a *APIServerKeys) startFetch() {
	done := make(chan struct{})
	a.inflight = done
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
		defer cancel()
		issuer, keys, err := a.fetch(ctx)
		a.mu.Lock()
		defer a.mu.Unlock()
		a.inflight = nil
		a.attempted = a.now()
		if err != nil {
			a.failures++
			a.lastErr = err
			return
		}
		a.issuer, a.keys, a.fetched = issuer, keys, a.attempted
		a.generation++
		a.failures, a.lastErr = 0, nil
	}()
}

func (a *APIServerKeys) fetch(ctx context.Context) (string, *jose.JSONWebKeySet, error) {
	var disc struct {
		Issuer string `json:"issuer"`
	}
	if err := a.getJSON(ctx, "/.well-known/openid-configuration", &disc); err != nil {
		return "", nil, err
	}
	if disc.Issuer == "" {
		return "", nil, errors.New("the kube-apiserver's OIDC discovery names no issuer (is --service-account-issuer set?)")
	}
	keys := &jose.JSONWebKeySet{}
	if err := a.getJSON(ctx, "/openid/v1/jwks", keys); err != nil {
		return "", nil, err
	}
	return disc.Issuer, keys, nil
}

func (a *APIServerKeys) getJSON(ctx context.Context, path string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.host+path, nil)
	if err != nil {
		return err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s from the kube-apiserver: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("GET %s from the kube-apiserver: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s from the kube-apiserver: HTTP %d: %s", path, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, into); err != nil {
		return fmt.Errorf("GET %s from the kube-apiserver: %w", path, err)
	}
	return nil
}
