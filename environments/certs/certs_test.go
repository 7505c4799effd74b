package certs

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
)

func TestIssuedCertificateVerifiesOnlyAgainstItsCA(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA("other CA")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue("receiver.knative-eventing.svc", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("the issued pair is not usable by crypto/tls: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		roots  []byte
		host   string
		wantOK bool
	}{
		{"its CA, DNS name", ca.CertPEM, "receiver.knative-eventing.svc", true},
		{"its CA, IP address", ca.CertPEM, "127.0.0.1", true},
		{"its CA, other name", ca.CertPEM, "elsewhere.svc", false},
		{"another CA", other.CertPEM, "receiver.knative-eventing.svc", false},
	} {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(tc.roots)
		_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: tc.host})
		if (err == nil) != tc.wantOK {
			t.Errorf("%s: verify error %v, want ok=%v", tc.name, err, tc.wantOK)
		}
	}
}
