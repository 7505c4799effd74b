package dispatcher

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/internal/features"
)

// TestStrictDeliversOverHTTPSOnly: with transport-encryption strict, an https subscriber
// (trusted through subscriberCACerts) gets its events, a plain-http one gets none and its
// events go to the https dead-letter sink (trusted through the sink's CACerts) saying why.
func TestStrictDeliversOverHTTPSOnly(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 1)
	secure, secureCA := tlsSink(t)
	dls, dlsCA := tlsSink(t)
	plain := newSink(t, nil)
	live := features.NewLive(features.Flags{TransportEncryption: features.EncryptionStrict, DefaultAuthorization: features.AllowSameNamespace})
	rd := e.start(func(c *Config) { c.Features = live })

	good := sub("secure", 1, secure.URL)
	good.SubscriberCACerts = &secureCA
	bad := sub("plain", 1, plain.URL)
	bad.Delivery = &v1beta1.DeliverySpec{Retry: ptr(int32(1)), BackoffDelay: ptr("PT0.01S"),
		DeadLetterSink: &v1beta1.Destination{URI: &dls.URL, CACerts: &dlsCA}}
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{good, bad}})
	rd.waitReady(t, good, bad)
	ids := e.produce(0, 2)
	secure.waitIDs(t, ids, 15*time.Second)
	dls.waitIDs(t, ids, 15*time.Second)
	if n := plain.attemptCount(); n != 0 {
		t.Errorf("the plain-http subscriber was sent %d requests in strict mode", n)
	}
	data, _ := base64.StdEncoding.DecodeString(fmt.Sprint(dls.received()[0].Extensions()[ExtErrorData]))
	if !strings.Contains(string(data), "transport-encryption is strict") {
		t.Errorf("knativeerrordata %q does not say strict transport encryption refused the delivery", data)
	}

	// Back to permissive: the same subscriber is served over http again, live.
	live.Set(features.Flags{TransportEncryption: features.EncryptionPermissive, DefaultAuthorization: features.AllowSameNamespace})
	more := e.produce(0, 1)
	plain.waitIDs(t, more, 15*time.Second)
}

// fakeTokens hands out "token:<namespace>/<sa>:<audience>" and counts requests.
type fakeTokens struct {
	mu    sync.Mutex
	calls []string
	// missing names service accounts that have no token to give (not created yet).
	missing map[string]bool
}

func (f *fakeTokens) Token(_ context.Context, namespace, sa, audience string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, namespace+"/"+sa+":"+audience)
	if f.missing[sa] {
		return "", fmt.Errorf("serviceaccounts %q not found", sa)
	}
	return "token:" + namespace + "/" + sa + ":" + audience, nil
}

// authSink records the Authorization header of every request and answers with respond.
func authSink(t *testing.T, code int, reply bool) (*httptest.Server, func() []string) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("Authorization"))
		mu.Unlock()
		if reply {
			w.Header().Set("Ce-Id", "reply-"+r.Header.Get("Ce-Id"))
			w.Header().Set("Ce-Specversion", "1.0")
			w.Header().Set("Ce-Source", "/subscriber")
			w.Header().Set("Ce-Type", "reply")
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
}

// TestOIDCTokensPerDestination: with authentication-oidc, the subscriber, its reply
// destination and its dead-letter sink each get a bearer token of the subscription's service
// account for their own audience, for as long as the subscriber names that account in auth.
func TestOIDCTokensPerDestination(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 1)
	subscriber, subGot := authSink(t, http.StatusOK, true)
	replySink, replyGot := authSink(t, http.StatusBadRequest, false) // refuses: the reply is dead-lettered
	dlsSink, dlsGot := authSink(t, http.StatusAccepted, false)
	tokens := &fakeTokens{}
	live := features.NewLive(features.Flags{TransportEncryption: features.EncryptionDisabled, OIDC: true, DefaultAuthorization: features.AllowSameNamespace})
	rd := e.start(func(c *Config) { c.Features = live; c.Tokens = tokens })

	s := sub("oidc", 1, subscriber.URL)
	s.SubscriberAudience = ptr("aud-subscriber")
	s.ReplyURI, s.ReplyAudience = ptr(replySink.URL), ptr("aud-reply")
	s.Auth = &v1beta1.AuthStatus{ServiceAccountName: ptr("my-subscription-oidc")}
	s.Delivery = &v1beta1.DeliverySpec{Retry: ptr(int32(0)),
		DeadLetterSink: &v1beta1.Destination{URI: ptr(dlsSink.URL), Audience: ptr("aud-dls")}}
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{s}})
	rd.waitReady(t, s)
	e.produce(0, 1)

	want := func(aud string) string { return "Bearer token:" + testNS + "/my-subscription-oidc:" + aud }
	waitHeaders := func(name string, got func() []string, header string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for len(got()) == 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if h := got(); len(h) == 0 || h[0] != header {
			t.Errorf("%s: Authorization %q, want %q", name, h, header)
		}
	}
	waitHeaders("subscriber", subGot, want("aud-subscriber"))
	waitHeaders("reply", replyGot, want("aud-reply"))
	waitHeaders("dead-letter sink", dlsGot, want("aud-dls"))

	waitCount := func(n int) []string {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for len(subGot()) < n && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		h := subGot()
		if len(h) < n {
			t.Fatalf("the subscriber got %d requests, want %d", len(h), n)
		}
		return h
	}
	// This dispatcher's copy of config-features says OIDC is off while the subscriber still
	// names its account (Knative's controller removes auth when it sees OIDC disabled, and the
	// dispatcher's mounted copy may lag either way): the spec decides, the token is sent.
	live.Set(features.Default())
	e.produce(0, 1)
	if h := waitCount(2); h[1] != want("aud-subscriber") {
		t.Errorf("with auth in the spec and OIDC off in the dispatcher's copy, Authorization %q, want %q", h[1], want("aud-subscriber"))
	}
	// Knative removed auth: the next event goes out without a token.
	s.Auth = nil
	s.Generation = 2
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{s}})
	rd.waitReady(t, s)
	e.produce(0, 1)
	if h := waitCount(3); h[len(h)-1] != "" {
		t.Errorf("without auth the subscriber got Authorization %q", h[len(h)-1])
	}

	// An account that has no token: with OIDC off here the event goes out without one (nothing
	// requires it); with OIDC on it is a failed attempt, dead-lettered, never sent anonymously.
	tokens.mu.Lock()
	tokens.missing = map[string]bool{"gone": true}
	tokens.mu.Unlock()
	s.Auth = &v1beta1.AuthStatus{ServiceAccountName: ptr("gone")}
	s.Generation = 3
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{s}})
	rd.waitReady(t, s)
	e.produce(0, 1)
	if h := waitCount(4); h[len(h)-1] != "" {
		t.Errorf("OIDC off and no token to be had: the subscriber got Authorization %q, want none", h[len(h)-1])
	}
	live.Set(features.Flags{TransportEncryption: features.EncryptionDisabled, OIDC: true, DefaultAuthorization: features.AllowSameNamespace})
	tokens.mu.Lock()
	tokens.calls = nil
	tokens.mu.Unlock()
	dlsBefore := len(dlsGot())
	e.produce(0, 1)
	// The attempt fails, and so does the dead-letter sink (it needs the same account's token):
	// both were tried, and nothing went out without a token.
	triedDLS := func() bool {
		tokens.mu.Lock()
		defer tokens.mu.Unlock()
		return slices.Contains(tokens.calls, testNS+"/gone:aud-dls")
	}
	deadline := time.Now().Add(30 * time.Second)
	for !triedDLS() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !triedDLS() {
		t.Errorf("OIDC on and no token to be had: the dead-letter sink was never tried")
	}
	if n := len(subGot()); n != 4 {
		t.Errorf("OIDC on and no token to be had: the subscriber got %d requests, want still 4", n)
	}
	if n := len(dlsGot()); n != dlsBefore {
		t.Errorf("OIDC on and no token to be had: the dead-letter sink got %d requests, want still %d (none anonymous)", n, dlsBefore)
	}
}
