package oidc

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// staticKeys is a KeySource with a fixed issuer and key set.
type staticKeys struct {
	issuer string
	keys   *jose.JSONWebKeySet
}

func (s staticKeys) Keys(context.Context, bool) (string, *jose.JSONWebKeySet, error) {
	return s.issuer, s.keys, nil
}

// FuzzVerify feeds arbitrary bearer tokens to the verifier. The committed corpus holds a token
// signed by the key in testdata (its private half was thrown away) for audience aud.test and
// one for another audience. Whatever the input, Verify must not panic, must refuse with
// ErrUnauthenticated, and may admit only the one validly signed token's claims: forging a
// signature is not something a mutation can do, so any other admission is a verification bug.
func FuzzVerify(f *testing.F) {
	b, err := os.ReadFile("testdata/fuzz-verify-key.json")
	if err != nil {
		f.Fatal(err)
	}
	var key jose.JSONWebKey
	if err := key.UnmarshalJSON(b); err != nil {
		f.Fatal(err)
	}
	v := &Verifier{
		Source: staticKeys{issuer: "https://issuer.test", keys: &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{key}}},
		Now:    func() time.Time { return time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC) },
	}
	for _, s := range []string{"", ".", "..", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "Bearer x", strings.Repeat("a", maxTokenBytes+1)} {
		f.Add(s)
	}
	// The payload of the one validly signed token for aud.test, from the corpus.
	seed, err := os.ReadFile("testdata/fuzz/FuzzVerify/valid")
	if err != nil {
		f.Fatal(err)
	}
	line := strings.TrimSpace(strings.Split(string(seed), "\n")[1])
	valid, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(line, "string("), ")"))
	if err != nil {
		f.Fatal(err)
	}
	admittedPayload := strings.Split(valid, ".")[1]
	f.Fuzz(func(t *testing.T, raw string) {
		id, err := v.Verify(context.Background(), raw, "aud.test")
		if err != nil {
			if !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("refused without ErrUnauthenticated: %v", err)
			}
			return
		}
		parts := strings.Split(raw, ".")
		if len(parts) != 3 || strings.TrimRight(parts[1], "=") != admittedPayload {
			t.Fatalf("admitted a token that is not the signed one: %q", raw)
		}
		if id.Subject != "system:serviceaccount:senders:producer" || id.Namespace != "senders" || id.ServiceAccount != "producer" {
			t.Fatalf("admitted with identity %+v", id)
		}
	})
}
