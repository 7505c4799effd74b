package oidc

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const testIssuer = "https://issuer.test"

// discovery is a fake kube-apiserver OIDC discovery: it serves one public key, or hangs, or
// fails, and counts the requests it gets.
type discovery struct {
	srv      *httptest.Server
	requests atomic.Int64
	mode     atomic.Value // "serve", "hang" or "fail"
	release  chan struct{}
	pub      jose.JSONWebKey
	signer   jose.Signer
}

func newDiscovery(t *testing.T) *discovery {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d := &discovery{release: make(chan struct{}), pub: jose.JSONWebKey{Key: &priv.PublicKey, KeyID: "k1", Algorithm: string(jose.ES256), Use: "sig"}}
	d.signer, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: priv, KeyID: "k1"}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	d.mode.Store("serve")
	d.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.requests.Add(1)
		switch d.mode.Load() {
		case "hang":
			select {
			case <-d.release:
			case <-r.Context().Done():
			}
			return
		case "fail":
			http.Error(w, "etcdserver: leader changed", http.StatusInternalServerError)
			return
		}
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			_ = json.NewEncoder(w).Encode(map[string]string{"issuer": testIssuer})
		case "/openid/v1/jwks":
			_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{d.pub}})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(d.srv.Close)
	t.Cleanup(func() { close(d.release) }) // runs first: hung handlers return, so Close can finish
	return d
}

// keys reaches d with a client without a timeout: a verification that waited for the hanging
// server would wait until the test's deadline.
func (d *discovery) keys() *APIServerKeys {
	return &APIServerKeys{host: d.srv.URL, client: d.srv.Client()}
}

func (d *discovery) token(t *testing.T, kid, audience string) string {
	t.Helper()
	signer := d.signer
	if kid != "k1" {
		// A key the issuer does not publish.
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if signer, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: k, KeyID: kid}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	tok, err := jwt.Signed(signer).Claims(jwt.Claims{
		Issuer: testIssuer, Subject: "system:serviceaccount:shop:producer", Audience: jwt.Audience{audience},
		Expiry: jwt.NewNumericDate(now.Add(time.Hour)), IssuedAt: jwt.NewNumericDate(now),
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestVerifyDuringAPIServerOutage: with the last good keys cached and older than MaxAge, and
// the apiserver hanging on every request, 100 verifications of valid tokens all succeed without
// waiting for it, and only one fetch is made. Before, each verification fetched under a global
// lock, so the first one hung (10 s per GET in production) and every other one queued behind it.
func TestVerifyDuringAPIServerOutage(t *testing.T) {
	d := newDiscovery(t)
	keys := d.keys()
	keys.MaxAge, keys.MinRefresh = time.Nanosecond, time.Nanosecond // stale at once; fetch whenever allowed
	v := &Verifier{Source: keys}
	const aud = "aud.test"
	tok := d.token(t, "k1", aud)
	if _, err := v.Verify(context.Background(), tok, aud); err != nil {
		t.Fatalf("with the apiserver up: %v", err)
	}
	before := d.requests.Load()
	d.mode.Store("hang")

	done := make(chan error, 1)
	go func() {
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		for range 100 {
			wg.Go(func() {
				if _, err := v.Verify(context.Background(), tok, aud); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		done <- errors.Join(func() (all []error) {
			for err := range errs {
				all = append(all, err)
			}
			return all
		}()...)
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("verifying with the last good keys failed: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("100 verifications did not complete while the apiserver hangs: they wait for it (%d requests made)", d.requests.Load()-before)
	}
	if n := d.requests.Load() - before; n > 3 {
		t.Errorf("100 verifications during the outage made %d requests to the apiserver, want at most 3", n)
	}
}

// TestKeyFetchBacksOff: while the apiserver answers 500, the last good keys go on verifying,
// and the fetches, one per allowed moment, come ever further apart: MinRefresh, then doubling
// up to MaxBackoff. Before, a failed fetch was not recorded, so every verification fetched.
func TestKeyFetchBacksOff(t *testing.T) {
	d := newDiscovery(t)
	var mu sync.Mutex
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(dt time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(dt) }
	keys := d.keys()
	keys.MaxAge, keys.MinRefresh, keys.MaxBackoff, keys.Now = time.Minute, 10*time.Second, 80*time.Second, clock
	v := &Verifier{Source: keys}
	const aud = "aud.test"
	tok := d.token(t, "k1", aud)
	ctx := context.Background()
	if _, err := v.Verify(ctx, tok, aud); err != nil {
		t.Fatalf("with the apiserver up: %v", err)
	}
	d.mode.Store("fail")
	settle := func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			keys.mu.Lock()
			idle := keys.inflight == nil
			keys.mu.Unlock()
			if idle {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("a fetch against a failing server did not end")
			}
			time.Sleep(time.Millisecond)
		}
	}

	advance(time.Minute) // stale
	var attemptsAt []time.Duration
	start := clock()
	for second := 0; second < 600; second++ {
		n := d.requests.Load()
		for range 10 {
			if _, err := v.Verify(ctx, tok, aud); err != nil {
				t.Fatalf("at +%ds: %v", second, err)
			}
		}
		settle()
		if d.requests.Load() > n {
			attemptsAt = append(attemptsAt, clock().Sub(start))
		}
		advance(time.Second)
	}
	// Gaps 10 s, 20 s, 40 s, then 80 s (the cap): attempts at 0, 10, 30, 70, 150, 230, ...
	want := []time.Duration{0, 10, 30, 70, 150, 230, 310, 390, 470, 550}
	for i := range want {
		want[i] *= time.Second
	}
	if !slices.Equal(attemptsAt, want) {
		t.Errorf("fetch attempts over 10 minutes of failures at %v, want %v", attemptsAt, want)
	}

	// A token naming an unknown key: no fetch while backing off, and 503 (the keys may be
	// out of date), not 401.
	n := d.requests.Load()
	if _, err := v.Verify(ctx, d.token(t, "k2", aud), aud); !errors.Is(err, ErrKeysUnavailable) {
		t.Errorf("unknown key while fetches fail: %v, want ErrKeysUnavailable", err)
	}
	if d.requests.Load() != n {
		t.Errorf("an unknown key id made a fetch during the backoff")
	}

	// The apiserver is back: the next allowed fetch succeeds, and an unknown key id is then
	// refused as such (401) without another fetch for MinRefresh.
	d.mode.Store("serve")
	advance(80 * time.Second)
	if _, err := v.Verify(ctx, tok, aud); err != nil {
		t.Fatal(err)
	}
	settle()
	n = d.requests.Load()
	for range 20 {
		if _, err := v.Verify(ctx, d.token(t, "k3", aud), aud); !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "does not publish") {
			t.Fatalf("unknown key with fresh keys: %v, want ErrUnauthenticated", err)
		}
	}
	if got := d.requests.Load() - n; got != 0 {
		t.Errorf("20 tokens with unknown key ids right after a fetch made %d requests, want 0", got)
	}
}
